"""`python -m rowhook` runs the CLI."""

import sys

from rowhook.cli import main

sys.exit(main())

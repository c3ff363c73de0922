"""`python -m rowhook ...` runs the CLI (the demo starts its API and relay this way)."""

import sys

from rowhook.cli import main

sys.exit(main())

"""`python -m bench [--tiny] [names...]`: every benchmark once, see bench/run_all.py."""

from bench.run_all import main

raise SystemExit(main())

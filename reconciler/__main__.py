"""`python -m reconciler` is the same as the `vmkeep` command."""

import sys

from reconciler.cli import main

sys.exit(main())

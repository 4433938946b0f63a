"""`python -m reconciler` is the same as the `vmkeep` command."""

from reconciler.cli import entry

entry()

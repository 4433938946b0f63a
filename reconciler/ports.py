"""Narrow ports: what the core and services need from the world, one Protocol per edge.

Adapters in `reconciler.adapters` implement these; tests of the pure core use fakes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from reconciler.model import Inventory

__all__ = ["InventorySource", "PolicyFile", "PolicySource"]


@dataclass(frozen=True)
class PolicyFile:
    """The raw bytes of one policy file and the path to report errors against."""

    path: str
    data: bytes


class PolicySource(Protocol):
    """Where policy files come from: a directory or one commit of a Git repository."""

    @property
    def revision(self) -> str | None:
        """The exact revision read (a commit SHA), or None for a plain directory."""
        ...

    def files(self) -> Iterator[PolicyFile]:
        """Every `*.yaml`/`*.yml` file, recursively, in a stable (sorted) order."""
        ...


class InventorySource(Protocol):
    """Reads the VMs (with disks and snapshot trees) of one vCenter."""

    def inventory(self) -> Inventory: ...

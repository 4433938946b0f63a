"""Errors are told apart by what the caller can do: transience and vCenter faults are
attributes, every exception class is in `reconciler.errors`, no code reads message text."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from reconciler import errors
from reconciler.adapters.retry import RetryPolicy, call_with_retries
from reconciler.adapters.vsphere import fault_error
from reconciler.errors import (
    RepositoryError,
    TransientError,
    VCenterError,
    forget_secrets,
    register_secret,
)

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0, jitter=0.0)


# --------------------------------------------------------------------------- transience


def test_a_transient_vcenter_failure_is_caught_as_a_vcenter_failure() -> None:
    with pytest.raises(VCenterError) as caught:
        raise TransientError("vc", "read: connection reset", 0.5)
    assert caught.value.transient and caught.value.retry_after == 0.5
    assert not VCenterError("vc", "InvalidArgument").transient


def test_any_error_with_a_retry_after_is_retried_whatever_its_class() -> None:
    outcomes: list[object] = [RepositoryError("the share is busy", retry_after=0.0), "done"]

    def op() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(op, NO_WAIT, sleep=lambda _: None) == "done"


def test_giving_up_keeps_the_class_the_vcenter_and_the_fault_and_names_the_vcenter_once(
) -> None:
    def busy() -> None:
        raise TransientError("vc", "lock VM 'app': TaskInProgress", 2.0, fault="TaskInProgress")

    with pytest.raises(TransientError) as caught:
        call_with_retries(busy, NO_WAIT, sleep=lambda _: None)
    error = caught.value
    assert (error.vcenter, error.fault, error.retry_after) == ("vc", "TaskInProgress", 2.0)
    assert error.detail == "lock VM 'app': TaskInProgress (gave up after 2 attempts)"
    assert str(error) == f"vCenter 'vc': {error.detail}"


def test_an_amended_message_is_masked_like_the_rest() -> None:
    register_secret("hunter22")
    try:
        error = VCenterError("vc", "login failed").amended(" (password hunter22)")
    finally:
        forget_secrets()
    assert str(error) == "vCenter 'vc': login failed (password ***)"
    assert error.detail == "login failed (password ***)"


# --------------------------------------------------------------------------- vCenter faults


@pytest.mark.parametrize(("fault", "name", "transient"), [
    (vim.fault.InvalidPowerState(msg="the VM is off"), "InvalidPowerState", False),
    (vim.fault.TaskInProgress(), "TaskInProgress", True),
    (None, None, False),
])
def test_a_vcenter_fault_is_kept_by_its_class_name_and_busy_faults_are_transient(
    fault: object, name: str | None, transient: bool,
) -> None:
    error = fault_error("vc", "power off VM 'app'", fault)
    assert (error.fault, error.transient) == (name, transient)
    assert error.detail.startswith(f"power off VM 'app': {name or 'unknown fault'}")


# --------------------------------------------------------------------------- the code base


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text("utf-8"))


#: Stays where it is: it must be an `ssl.SSLError`, and `errors` does no I/O.
OUTSIDE_ERRORS = {"reconciler/adapters/vsphere_tls.py:FingerprintMismatch"}


def test_every_public_exception_class_of_the_product_is_defined_in_errors() -> None:
    exception_names = {n for n, v in vars(builtins).items()
                       if isinstance(v, type) and issubclass(v, BaseException)}
    exception_names |= {n for n, v in vars(errors).items()
                        if isinstance(v, type) and issubclass(v, BaseException)}
    elsewhere = []
    for path, tree in _sources():
        if path == "reconciler/errors.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {b.id if isinstance(b, ast.Name) else b.attr
                     for b in node.bases if isinstance(b, ast.Name | ast.Attribute)}
            if bases & exception_names or any(b.endswith(("Error", "Exception"))
                                              for b in bases):
                elsewhere.append(f"{path}:{node.name}")
    assert sorted(set(elsewhere) - OUTSIDE_ERRORS) == []


def _reads_message_text(node: ast.AST) -> bool:
    """`… in x.message`, `x.detail.endswith(…)` and the like."""
    if isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn)
                                             for op in node.ops):
        return any(isinstance(side, ast.Attribute) and side.attr in ("message", "detail")
                   for side in node.comparators)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith", "removeprefix")
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in ("message", "detail"))


def test_no_code_decides_on_the_text_of_an_error_message() -> None:
    found = [f"{path}:{getattr(node, 'lineno', 0)}" for path, tree in _sources()
             for node in ast.walk(tree) if _reads_message_text(node)]
    assert found == []

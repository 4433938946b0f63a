"""The package's layers, checked from the import statements of every module.

base (model, errors, ports) ← pure core ← services ← shell; adapters depend on base only;
pyVmomi is imported by one adapter module only; the pure core imports no I/O libraries.
In the shell, only `wiring` imports adapters (type-only imports aside), and `vmkeep`
commands (modules of `reconciler.cli` with a `register`) do not import each other. In the
export repository package only `store` (and the package's `__init__`) imports `store`: the
write, read, verify and GC paths depend on `core`, and `Repository` composes them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

BASE = {"model", "errors", "ports", "vmconfig", "collector", "processes"}
SERVICES = {"executor", "restore", "consistency", "files", "vcenter_restore", "recovery",
            "reconcile", "lease"}
SHELL = {"cli", "controller", "wiring", "__main__", "engine"}
ADAPTERS = "adapters"

#: Third-party or standard modules that mean I/O, the clock or the network; the pure core and
#: the base layer must not import them.
IO_MODULES = {"socket", "subprocess", "sqlite3", "ssl", "http", "urllib", "requests", "git",
              "pyVmomi", "pyVim", "watchdog", "filelock", "shutil", "tempfile", "threading",
              "concurrent", "time"}


def layer_of(module: str) -> int:
    """0 base, 1 pure core, 2 services, 3 shell; adapters are handled apart."""
    top = module.split(".")[1] if "." in module else module
    if top in BASE:
        return 0
    if top in SERVICES:
        return 2
    if top in SHELL:
        return 3
    return 1


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _package_of(module: str, path: Path) -> list[str]:
    parts = module.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _from_target(node: ast.ImportFrom, package_parts: list[str]) -> str:
    """The module a `from … import …` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    prefix = ".".join(package_parts[: len(package_parts) - node.level + 1])
    return f"{prefix}.{node.module}" if node.module else prefix


def imports_of(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    package_parts = _package_of(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package_parts)
            names.add(target)
            if target == "reconciler" or (node.module is None and node.level):
                names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


ALL = modules()


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_module_imports_only_from_its_own_or_lower_layers(module: str, path: Path) -> None:
    if module == "reconciler":
        return
    own_is_adapter = module.split(".")[1] == ADAPTERS
    for name in imports_of(module, path):
        if not name.startswith("reconciler.") or name == "reconciler":
            continue
        target_is_adapter = name.split(".")[1] == ADAPTERS
        if own_is_adapter:
            assert target_is_adapter or layer_of(name) == 0, (
                f"{module} is an adapter and may import only the base layer, not {name}"
            )
            continue
        if target_is_adapter:
            assert layer_of(module) >= 2, (
                f"{module} (pure core/base) must not import the adapter {name}; "
                "pass what it needs in as values or ports"
            )
            continue
        assert layer_of(name) <= layer_of(module), (
            f"{module} (layer {layer_of(module)}) imports {name} (layer {layer_of(name)}), "
            "a higher layer"
        )


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_pyvmomi_is_imported_only_by_the_vsphere_adapter(module: str, path: Path) -> None:
    if module == "reconciler.adapters.vsphere" or module.startswith("reconciler.adapters.vsphere."):
        return
    for name in imports_of(module, path):
        assert name.split(".")[0] not in {"pyVmomi", "pyVim", "vmware"}, (
            f"{module} imports {name}; only reconciler.adapters.vsphere may use pyVmomi"
        )


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_base_and_pure_core_do_no_io(module: str, path: Path) -> None:
    if module == "reconciler" or module.split(".")[1] == ADAPTERS or layer_of(module) > 1:
        return
    for name in imports_of(module, path):
        assert name.split(".")[0] not in IO_MODULES, (
            f"{module} is in the pure core but imports {name}; move the I/O to an adapter "
            "or the shell"
        )


def test_the_layer_checker_sees_a_violation_when_one_exists(tmp_path: Path) -> None:
    bad = tmp_path / "planner.py"
    bad.write_text("from reconciler.cli import main\nimport pyVmomi\n", encoding="utf-8")
    names = imports_of("reconciler.planner", bad)
    assert "reconciler.cli" in names
    assert layer_of("reconciler.cli") > layer_of("reconciler.planner")
    assert "pyVmomi" in names


# ------------------------------------------------------------------ the shell's own rules


def runtime_imports(module: str, path: Path) -> set[str]:
    """Every module `path` imports when it runs (imports under `if TYPE_CHECKING:` are for
    annotations only), with `from package import name` also counted as `package.name`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package_parts = _package_of(module, path)
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package_parts)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def adapter_imports(module: str, path: Path) -> list[str]:
    """The adapters a shell module imports itself; only `wiring` builds adapters."""
    if module == "reconciler" or module == "reconciler.wiring" or layer_of(module) != 3:
        return []
    return sorted(n for n in runtime_imports(module, path)
                  if n == f"reconciler.{ADAPTERS}" or n.startswith(f"reconciler.{ADAPTERS}."))


def is_command(path: Path) -> bool:
    """A `vmkeep` command module: it registers a subcommand (`def register`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body)


COMMANDS = {m for m, p in ALL if m.startswith("reconciler.cli.") and is_command(p)}


def command_imports(module: str, path: Path, commands: set[str]) -> list[str]:
    """The other commands a command module imports (shared pieces belong in a services
    module or in a helper such as `cli/common`)."""
    if module not in commands:
        return []
    return sorted(n for n in runtime_imports(module, path) if n in commands and n != module)


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_shell_modules_other_than_wiring_import_no_adapter(module: str, path: Path) -> None:
    found = adapter_imports(module, path)
    assert not found, (
        f"{module} imports {', '.join(found)}; the shell reaches adapters through "
        "reconciler.wiring only"
    )


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_commands_do_not_import_each_other(module: str, path: Path) -> None:
    found = command_imports(module, path, COMMANDS)
    assert not found, (
        f"the command {module} imports the command(s) {', '.join(found)}; move what they "
        "share to a services module or to reconciler.cli.common"
    )


def test_the_commands_are_found() -> None:
    assert {"reconciler.cli.apply", "reconciler.cli.status", "reconciler.cli.forget",
            "reconciler.cli.state", "reconciler.cli.verify"} <= COMMANDS
    assert "reconciler.cli.common" not in COMMANDS


def test_a_shell_module_importing_an_adapter_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "status.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from reconciler.adapters.statedb import ActionRecord\n"
        "def run() -> None:\n    from reconciler.adapters.statedb import StateDB\n",
        encoding="utf-8")
    assert adapter_imports("reconciler.cli.status", planted) == [
        "reconciler.adapters.statedb", "reconciler.adapters.statedb.StateDB"]
    planted.write_text("from reconciler.adapters import vsphere\n", encoding="utf-8")
    assert adapter_imports("reconciler.controller", planted) == [
        "reconciler.adapters", "reconciler.adapters.vsphere"]
    assert adapter_imports("reconciler.wiring", planted) == []  # wiring builds them


def test_a_command_importing_another_command_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "status.py"
    planted.write_text("from reconciler.cli.apply import LEASE\n"
                       "from reconciler.cli import common, forget\n"
                       "def register() -> None: ...\n", encoding="utf-8")
    assert is_command(planted)
    assert command_imports("reconciler.cli.status", planted, COMMANDS) == [
        "reconciler.cli.apply", "reconciler.cli.forget"]
    relative = tmp_path / "gc.py"
    relative.write_text("from .verify import open_target\n", encoding="utf-8")
    assert command_imports("reconciler.cli.gc", relative, COMMANDS) == [
        "reconciler.cli.verify"]


# ------------------------------------------------------------------ the repository package

REPOSITORY = f"reconciler.{ADAPTERS}.repository"
REPOSITORY_STORE = f"{REPOSITORY}.store"


def store_imports(module: str, path: Path) -> list[str]:
    """How a module of the repository package other than `store` and the package itself
    reaches `store` (annotation-only imports count: they were the cycle)."""
    if not module.startswith(f"{REPOSITORY}.") or module == REPOSITORY_STORE:
        return []
    return sorted(n for n in imports_of(module, path)
                  if n == REPOSITORY_STORE or n.startswith(f"{REPOSITORY_STORE}."))


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_repository_modules_other_than_store_do_not_import_store(
    module: str, path: Path
) -> None:
    found = store_imports(module, path)
    assert not found, (
        f"{module} imports {', '.join(found)}; the repository's paths take a "
        "RepositoryCore (core.py), and only store.Repository composes them"
    )


def test_a_repository_module_importing_store_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "writer.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .store import Repository\n", encoding="utf-8")
    assert store_imports(f"{REPOSITORY}.writer", planted) == [REPOSITORY_STORE]
    planted.write_text("from . import store\n", encoding="utf-8")
    assert store_imports(f"{REPOSITORY}.gc", planted) == [REPOSITORY_STORE]
    planted.write_text("from reconciler.adapters.repository.store import Repository\n",
                       encoding="utf-8")
    assert store_imports(f"{REPOSITORY}.reader", planted) == [REPOSITORY_STORE]
    assert store_imports(REPOSITORY_STORE, planted) == []  # store is where it lives
    package = tmp_path / "__init__.py"
    package.write_text("from .store import Repository\n", encoding="utf-8")
    assert store_imports(REPOSITORY, package) == []  # the package re-exports it

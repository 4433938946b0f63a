"""The package as it ships: a wheel built from this tree carries the JSON Schemas the code
loads (from `reconciler/schemas`, a link to the top-level `schemas/`) and `py.typed`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from reconciler import hostconfig, policies

from .conftest import REPO


def test_the_schemas_the_code_loads_are_the_projects_schemas() -> None:
    for path in (hostconfig.SCHEMA_PATH, policies.SCHEMA_PATH):
        assert path.parent.name == "schemas" and path.parent.parent.name == "reconciler"
        assert path.read_bytes() == (REPO / "schemas" / path.name).read_bytes()


def test_a_wheel_built_from_the_tree_ships_every_schema_and_py_typed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("vmkeep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in (REPO / "schemas").glob("*.json"):
        assert f"reconciler/schemas/{schema.name}" in names
    assert "reconciler/py.typed" in names
    assert any(name.endswith("entry_points.txt") for name in names)

"""`vmkeep worker` refuses bad input in one line, exit 1, before it connects anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main

BASE = "vcenters: {}\ntargets: {}\nstate: state.db\n"
ENGINE = "engine: {type: temporal, address: '127.0.0.1:1'}\nproxies: {site-a: {hosts: [esx1]}}\n"


@pytest.mark.parametrize(("config", "args", "message"), [
    (BASE, [], "vmkeep worker needs `engine:` in the host config"),
    (BASE + ENGINE, ["--queue", "site-z"],
     "unknown task queue 'site-z': the host config has vmkeep, site-a"),
    (BASE + ENGINE, ["--slots", "0"], "--slots must be 1 or more"),
    (BASE + "engine: {type: temporal, address: 'nowhere'}\n", [], "vmkeep.yaml:4:"),
], ids=["no engine", "unknown queue", "zero slots", "bad address"])
def test_bad_worker_input_is_one_line_and_exit_1(tmp_path: Path, capsys, config: str,
                                                 args: list[str], message: str) -> None:
    path = tmp_path / "vmkeep.yaml"
    path.write_text(config)
    assert main(["worker", "--config", str(path), *args]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "state.db").exists()


def test_a_worker_that_cannot_reach_the_engine_says_so_in_one_line(tmp_path: Path,
                                                                   capsys) -> None:
    path = tmp_path / "vmkeep.yaml"
    path.write_text(BASE + ENGINE)
    assert main(["worker", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vmkeep: error: engine: cannot connect to Temporal at 127.0.0.1:1")
    assert len(err.splitlines()) == 1, err

"""`vmkeep verify` and `vmkeep gc` against real repositories named in a real host config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main

from .disks import CHUNK, export, flip_chunk, noise, open_repo, point_id


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "vmkeep.yaml"
    path.write_text("targets:\n  nas: {type: directory, path: exports}\n", encoding="utf-8")
    repo = open_repo(tmp_path / "exports")
    export(repo, point_id(1), {"d0": noise("cli1", 12 * CHUNK)})
    export(repo, point_id(2), {"d0": noise("cli2", 12 * CHUNK)})
    repo.close()
    return path


def test_verify_of_an_intact_target_exits_zero(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--config", str(config)]) == 0
    assert "target nas: 2 point(s)" in capsys.readouterr().out


def test_verify_names_the_damaged_point_and_chunk_and_exits_one(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = open_repo(config.parent / "exports")
    victim = repo.open_disk(point_id(2), "d0").ids[5]
    flip_chunk(repo, victim)
    assert main(["verify", "--config", str(config), "--all", "--target", "nas"]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED {point_id(2)}" in out
    assert f"disk d0: chunk 5 at offset {5 * CHUNK} ({victim.hex()}): hash mismatch" in out
    assert point_id(1) not in out

    assert main(["verify", "--config", str(config), "--point", point_id(1)]) == 0
    capsys.readouterr()
    assert main(["verify", "--config", str(config), "-o", "json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["target"] == "nas" and not body["ok"]
    assert body["damaged"][0]["chunks"][0]["chunkId"] == victim.hex()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--target", "tape"], "no target 'tape'"),
        (["verify", "--point", "nightly/x/20260101T000000Z"], "no restore point"),
        (["gc", "--grace", "soon"], "--grace"),
        (["verify", "--point", "a", "--all"], "not allowed with argument --point"),
    ],
)
def test_bad_arguments_give_one_clear_error_line(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_target_must_be_chosen_when_several_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vmkeep.yaml"
    path.write_text(
        "targets:\n  a: {type: directory, path: a}\n  b: {type: directory, path: b}\n",
        encoding="utf-8",
    )
    assert main(["gc", "--config", str(path)]) == 1
    assert "choose a target with --target NAME (targets: a, b)" in capsys.readouterr().err


def test_gc_reports_what_it_reclaimed(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_repo(config.parent / "exports").delete_point(point_id(1))
    assert main(["gc", "--config", str(config), "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["target"] == "nas" and body["points"] == 1 and body["bytes_freed"] > 0
    assert main(["gc", "--config", str(config)]) == 0
    assert "target nas: 1 point(s)" in capsys.readouterr().out


def test_gc_of_a_missing_repository_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vmkeep.yaml"
    path.write_text("targets:\n  nas: {type: directory, path: nothing-here}\n", encoding="utf-8")
    assert main(["gc", "--config", str(path)]) == 1
    assert "no vmkeep repository" in capsys.readouterr().err

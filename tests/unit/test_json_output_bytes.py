"""JSON written with orjson is the same text the standard library writes with indent=2.

Floats are left out: orjson writes 6.103515625e-05 as 0.00006103515625 (the same number);
the documents written this way (plan, review, state) have no floating-point fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli.common import write_json
from reconciler.render.json_text import json_bytes

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
)
DOCUMENTS = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_json_output_is_byte_identical_to_the_standard_librarys_indented_text(
    document: Any,
) -> None:
    expected = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    assert json_bytes(document) == expected


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    document = {"big": 2**70, "list": [1, "é"]}
    assert json_bytes(document) == (json.dumps(document, indent=2, ensure_ascii=False)
                                    + "\n").encode()


def test_a_document_of_several_pieces_is_written_whole_to_a_file_and_to_stdout(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    document = {"points": [{"id": f"p{i}", "name": "é" * (i % 7)} for i in range(60_000)]}
    expected = json_bytes(document)
    assert len(expected) > 3 * (1 << 20)  # several 1 MiB pieces, the last one partial
    write_json(document, str(tmp_path / "plan.json"))
    assert (tmp_path / "plan.json").read_bytes() == expected
    write_json(document, None)
    assert capsysbinary.readouterr().out == expected

"""Properties of policy checking on mutated input: never raises, always located in the file.

The number of examples comes from `VMKEEP_PROPERTY_EXAMPLES` (default 200).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.policies import check_policies
from reconciler.ports import PolicyFile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))]
EXAMPLES_RUN = settings(max_examples=int(os.environ.get("VMKEEP_PROPERTY_EXAMPLES", "200")),
                        deadline=None)
NOISE = [b":", b"-", b" ", b"\t", b"[", b"]", b"{", b"}", b"&a", b"*a", b"!!", b"'", b'"',
         b"\n", b"---\n", b"#", b"0", b"\xff", b"\x00", b"~", b"yes", b",", b"<<: "]


def lines_of(data: bytes) -> int:
    return data.count(b"\n") + 1


@EXAMPLES_RUN
@given(
    st.sampled_from(EXAMPLES),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), st.sampled_from(NOISE)), max_size=4),
)
def test_any_mutation_gives_located_diagnostics_or_valid_policies(original, edits) -> None:
    data = original
    for where, cut, insert in edits:
        at = int(where * len(data))
        data = data[:at] + insert + data[at + cut :]
    report = check_policies([PolicyFile("m.yaml", data)])
    for diagnostic in report.diagnostics:
        assert diagnostic.path == "m.yaml"
        assert 1 <= diagnostic.line <= lines_of(data) + 1
        assert diagnostic.column >= 1
        assert diagnostic.message
    if not report.diagnostics:
        assert report.policies or not data.strip(b"- \n#")


@EXAMPLES_RUN
@given(st.permutations(EXAMPLES))
def test_the_result_does_not_depend_on_the_order_of_files(files) -> None:
    named = [PolicyFile(f"f{i}.yaml", data) for i, data in enumerate(EXAMPLES)]
    shuffled = [next(f for f in named if f.data == data) for data in files]
    assert check_policies(shuffled).policies == check_policies(named).policies

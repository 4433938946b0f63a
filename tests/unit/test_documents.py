"""Safe YAML loading with locations: properties on generated data, limits, refusals."""

from __future__ import annotations

import os
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import documents
from reconciler.documents import DocumentLimits, did_you_mean, dotted, load

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=8)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


def paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=5), st.booleans())
def test_loading_dumped_yaml_gives_the_same_data_and_a_mark_for_every_value(data, flow) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    result = load(text.encode(), "gen.yaml")
    assert result.diagnostics == ()
    assert [d.data for d in result.documents] == [data]
    doc = result.documents[0]
    lines = text.splitlines()
    for where in paths(data):
        assert where in doc.values
        line, column = doc.values[where]
        assert 1 <= line <= len(lines) + 1 and column >= 1
        if where and isinstance(where[-1], str):
            key_line, key_column = doc.keys[where]
            assert lines[key_line - 1][key_column - 1 :].lstrip("'\"").startswith(where[-1][:1])


def _pure_python(text: bytes) -> documents.LoadResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(documents, "_LIBYAML", False)
        return load(text, "gen.yaml")


def _same(a: documents.LoadResult, b: documents.LoadResult) -> bool:
    return a.diagnostics == b.diagnostics and [
        (d.index, d.data, dict(d.values), dict(d.keys)) for d in a.documents
    ] == [(d.index, d.data, dict(d.values), dict(d.keys)) for d in b.documents]


@pytest.mark.skipif(not documents._LIBYAML, reason="PyYAML built without libyaml")
@settings(max_examples=int(os.environ.get("VMKEEP_HYPOTHESIS_EXAMPLES", "150")), deadline=None)
@given(
    docs=st.lists(st.dictionaries(keys, values, min_size=1, max_size=5), min_size=1, max_size=3),
    flow=st.booleans(),
    cut=st.integers(0, 400),
    junk=st.one_of(
        st.sampled_from(["", ":", "- x", "[", "}", "\t", "&a", "*a", "!!python/name:os",
                         "\u0007", "key: value", "  - ", '"', "---", "<<: *a", "? x", "%YAML 1.1",
                         "|\n  text", ">-", "\ufeff", "\u0085", "\u2028", "'", "#", "@", "`"]),
        st.text(alphabet=" \n\t-:?,[]{}#&*!|>'\"%@`abc01.\\", max_size=8),
    ),
)
def test_libyaml_and_pure_python_read_every_file_alike(docs, flow, cut, junk) -> None:
    """Valid files and damaged ones: same documents, same marks, same diagnostics."""
    text = "---\n".join(yaml.safe_dump(d, default_flow_style=flow, allow_unicode=True)
                        for d in docs)
    for variant in (text, text[:cut] + junk + text[cut:]):
        data = variant.encode()
        assert _same(load(data, "gen.yaml"), _pure_python(data))


def test_values_and_keys_are_located_exactly() -> None:
    doc = load(b"a: 1\nb:\n  - x\n  - {c: d}\n", "f.yaml").documents[0]
    assert doc.position(("b", 1, "c")) == (4, 9)
    assert doc.position(("b", 1, "c"), key=True) == (4, 6)
    assert doc.position(("b", 0)) == (3, 5)


def test_values_reached_through_an_alias_are_located_at_the_alias() -> None:
    doc = load(b"base: &b {x: 1}\nother: *b\n", "f.yaml").documents[0]
    assert doc.data["other"] == {"x": 1}
    assert doc.position(("other", "x")) == (2, 8)


def test_plain_yaml_types_are_read_and_timestamps_stay_text() -> None:
    doc = load(b"a: yes\nb: 0x10\nc: 1.5\nd: ~\ne: 2024-01-02\nf: !!str 12\n", "f").documents[0]
    assert doc.data == {"a": True, "b": 16, "c": 1.5, "d": None, "e": "2024-01-02", "f": "12"}


def test_several_documents_and_empty_ones_are_read_in_order() -> None:
    result = load(b"# only a comment\n---\na: 1\n---\n---\nb: 2\n...\n", "f.yaml")
    assert [d.data for d in result.documents] == [{"a": 1}, {"b": 2}]
    assert [d.index for d in result.documents] == [0, 2]


def test_a_byte_order_mark_is_accepted() -> None:
    assert load(b"\xef\xbb\xbfa: 1\n", "f").documents[0].data == {"a": 1}


def test_a_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    result = load(b"a: 1\n---\nb: [\n", "f.yaml")
    assert [d.data for d in result.documents] == [{"a": 1}]
    assert result.diagnostics[0].line == 4


@pytest.mark.parametrize(
    ("limits", "text", "fragment"),
    [
        (DocumentLimits(max_bytes=10), b"a: 123456789\n", "file is too large"),
        (DocumentLimits(max_documents=2), b"a: 1\n---\na: 2\n---\na: 3\n", "too many YAML doc"),
        (DocumentLimits(max_depth=3), b"a: {b: {c: {d: 1}}}\n", "deeper than 3"),
        (DocumentLimits(max_aliases=2), b"a: &x 1\nb: [*x, *x, *x]\n", "too many aliases"),
        (DocumentLimits(max_nodes=10), b"a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n", "too many values"),
        (DocumentLimits(max_nodes=10), b"a: &x [1, 2, 3, 4]\nb: *x\nc: *x\n", "too large once"),
    ],
)
def test_each_limit_is_enforced_with_a_clear_message(limits, text, fragment) -> None:
    result = load(text, "f.yaml", limits)
    assert any(fragment in d.message for d in result.diagnostics), result.diagnostics


def test_an_alias_bomb_is_refused_without_being_expanded() -> None:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 12):
        prev = f"*l{level - 1}"
        lines.append(f"l{level}: &l{level} [{', '.join([prev] * 9)}]")
    data = ("\n".join(lines) + "\n").encode()
    started = time.process_time()
    result = load(data, "bomb.yaml")
    elapsed = time.process_time() - started
    assert result.documents == ()
    assert "alias bomb" in result.diagnostics[0].hint
    print(f"alias bomb refused in {elapsed * 1000:.1f} ms CPU")


@pytest.mark.parametrize("prefix", [b"a: ", b"a: !bad-tag x\nb: "])
def test_deep_nesting_stops_reading_at_the_limit_without_recursion(prefix: bytes) -> None:
    depth = 400_000  # a 1 MiB file: PyYAML's scanner is quadratic in flow depth if let go on
    started = time.process_time()
    result = load(prefix + b"[" * depth + b"]" * depth + b"\n", "deep.yaml",
                  DocumentLimits(max_bytes=2 << 20))
    elapsed = time.process_time() - started
    assert any("nesting is deeper" in d.message for d in result.diagnostics)
    print(f"{depth} levels refused in {elapsed * 1000:.0f} ms CPU")


def test_the_value_of_a_duplicate_key_is_read_but_the_first_one_is_kept() -> None:
    result = load(b"a: {x: 1}\na: {x: [2, 3]}\nb: 4\n", "f.yaml")
    assert result.documents[0].data == {"a": {"x": 1}, "b": 4}
    assert result.documents[0].position(("a", "x")) == (1, 8)
    assert [(d.line, d.column) for d in result.diagnostics] == [(2, 1)]


def test_dotted_paths_and_hints_read_naturally() -> None:
    assert dotted(("spec", "names", 0)) == "spec.names[0]"
    assert dotted(()) == "document"
    assert did_you_mean("exprots", ["exports", "snapshots"]) == "did you mean `exports`?"
    assert did_you_mean("zzz", ["a", "b"]) == "expected one of: a, b"
    assert did_you_mean("zzz", ["a", "b"], listing=False) == ""


def test_the_loader_never_constructs_python_objects() -> None:
    text = b"a: !!python/object/new:os.system [echo pwned]\n"
    result = documents.load(text, "f.yaml")
    assert result.documents == ()
    assert "is not allowed" in result.diagnostics[0].message


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (b"a: !!python/object/new:os.system [echo]\n", "remove the tag"),
        (b"a: !!python/object:os.Thing {b: 1}\n", "remove the tag"),
        (b"a: !!python/name:os.system\n", "remove the tag"),
        (b"!custom a: 1\n", "remove the tag"),
        (b"- name: db\n", "remove the leading `- `"),
        (b"just text\n", "`key: value` lines"),
        (b"a: " + b"[" * 40 + b"]" * 40 + b"\n", "unclosed `[` or `{`"),
        (b"? [a, b]\n: 1\n", "a list or mapping cannot be a key"),
        (b"a: &x b\n*x : 1\n", "write the key out"),
        (b"a: &x [1, *x]\n", "a value cannot contain itself"),
        (b"spec:\n  vcenter: prod\n   extra: 1\n", "check this line's indentation"),
        (b"spec:\n    vcenter: prod\n  selector: 1\n", "start in the same column"),
        (b"a:\n  - x\n - y\n", "start in the same column"),
        (b"a: 1\nb\nc: 2\n", "add `: ` after the key at line 2"),
        (b"a: [1, 2\nb: 3\n", "close the `[` opened at line 1"),
        (b"a: {x: 1\nb: 3\n", "close the `{` opened at line 1"),
        (b"a: [1, 2]]\n", "remove the unmatched `]`"),
        (b'a: "x\nb: 1\n', "close the quote opened at line 1"),
        (b"a: @x\n", "put the value in quotes"),
        (b"a:\n\tb: 1\n", "indent with spaces"),
    ],
)
def test_every_refusal_says_how_to_fix_it(text: bytes, hint: str) -> None:
    result = load(text, "f.yaml")
    assert result.diagnostics, "expected a problem"
    assert hint in result.diagnostics[0].hint, result.diagnostics


def test_a_file_with_too_many_documents_gets_that_one_error_and_no_documents() -> None:
    text = b"a: 1\n---\n" + b"- not a mapping\n---\n" * 4 + b"b: [\n"
    result = load(text, "f.yaml", DocumentLimits(max_documents=3))
    assert result.documents == ()
    assert [(d.line, d.message) for d in result.diagnostics] == [
        (6, "too many YAML documents in one file (more than 3)")]
    assert "split it into files of at most 3 documents" in result.diagnostics[0].hint

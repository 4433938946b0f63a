"""Safe YAML documents that remember where every value came from.

`load(data, path)` turns the bytes of one file into plain JSON-like values (dict, list, str,
int, float, bool, None), one `Document` per YAML document, each with the `line:column` of
every value and every mapping key. It is built on PyYAML's event parser, with its own small
iterative composer, so that it can refuse what a policy file has no business containing:

* invalid UTF-8, control characters, YAML syntax errors (located);
* duplicate mapping keys (the second one is reported, the first one kept);
* tags other than the plain YAML types (`!!python/object`, `!custom`, `!!binary`, ...);
* merge keys (`<<`), complex (non-scalar) keys, recursive aliases;
* more than `DocumentLimits` allows: file size, documents per file, nesting depth,
  aliases per document and the size a document would have once aliases are expanded, so an
  alias bomb ("billion laughs") is refused after a few thousand events, never expanded;
* documents that are not mappings.

Nothing is ever constructed from a tag, and aliases share the anchored value instead of
copying it. libyaml's C parser reads a file first when it can (`documents_fast`); JSON
Schema errors become located messages in `schema_messages`. Pure: no I/O, no clock.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.documents_fast import LIBYAML, EventSource, read_fast
from reconciler.errors import Diagnostic

__all__ = [
    "Document",
    "DocumentLimits",
    "LoadResult",
    "Where",
    "did_you_mean",
    "dotted",
    "key_text",
    "kind_name",
    "load",
    "looks_like_a_name",
]

#: A path to a value inside a document: mapping keys and sequence indexes.
Where = tuple[str | int, ...]

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML}{name}" for name in ("str", "int", "float", "bool", "null")}
#: How to fix a refused tag, wherever it appears (value, list, mapping, key).
_TAG_HINT = "remove the tag; only plain mappings, lists, strings, numbers, booleans and null " \
    "may be used"
_DEPTH_HINT = "look for an unclosed `[` or `{`; no policy or host config needs this many levels"
#: Whether libyaml's C parser reads files first (`documents_fast`); tests turn it off.
_LIBYAML: bool = LIBYAML
#: How plain scalars are resolved and built: PyYAML's safe loader's own rules, shared by both
#: parsers (neither keeps state for it).
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_KIND_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "null (empty)"}


@dataclass(frozen=True)
class DocumentLimits:
    """What one file may contain at most; far above any real policy or host config."""

    max_bytes: int = 1 << 20
    max_documents: int = 1000
    max_depth: int = 32
    max_aliases: int = 100
    max_nodes: int = 10_000


@dataclass(frozen=True)
class Document:
    """One YAML document: its value and the location of every value and mapping key."""

    path: str
    index: int  # 0-based position in the file
    data: Any
    values: Mapping[Where, tuple[int, int]] = field(repr=False)
    keys: Mapping[Where, tuple[int, int]] = field(repr=False)

    def position(self, where: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """(line, column) of the value at `where` (of its key with `key=True`).

        Values reached through an alias have no marks of their own: the nearest enclosing
        value that has one (the alias) is used.
        """
        where = tuple(where)
        if key and where in self.keys:
            return self.keys[where]
        while where not in self.values and where:
            where = where[:-1]
        return self.values.get(where, (1, 1))

    def diagnostic(
        self, where: Sequence[str | int], message: str, hint: str = "", *, key: bool = False
    ) -> Diagnostic:
        line, column = self.position(where, key=key)
        return Diagnostic(self.path, line, column, message, hint)


@dataclass(frozen=True)
class LoadResult:
    """The documents that could be read and every problem found on the way."""

    documents: tuple[Document, ...]
    diagnostics: tuple[Diagnostic, ...]


def dotted(where: Iterable[str | int]) -> str:
    """`("spec", "selector", "include", "names", 0)` -> `spec.selector.include.names[0]`."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "document"


def did_you_mean(word: str, choices: Iterable[str], *, listing: bool = True) -> str:
    """A hint naming the closest choice, or (with `listing`) the choices when few; else ""."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if listing and options and len(options) <= 12:
        return "expected one of: " + ", ".join(options)
    return ""


#: A key is repeated in messages only when it reads as a word or a name: at most 40
#: characters, and for an unknown key camelCase, snake_case or kebab-case letters
#: (`maxDeletesPerRun`, `password_env`, `ca-file`: every key vmkeep knows looks like that).
#: A name that is wrong (duplicate, invalid) may also be lowercase with digits (`prod-vc2`)
#: or letters of any case (`Prod`). Anything else
#: (digits in an unknown key, a leading capital, spaces, punctuation, longer text) looks like
#: a value typed as a key (a password pasted with a colon, say) and is not repeated: the
#: message gives its line and column instead.
_WORD_LIKE = re.compile(r"[a-z]+(?:[A-Z][a-z]+)*|[a-z]+(?:[-_][a-z]+)*")
_NAME_LIKE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*|[A-Za-z][A-Za-z_-]*")
_MAX_SHOWN = 40


def looks_like_a_name(key: str, *, digits: bool = True) -> bool:
    """Whether a mapping key may be repeated in a message (see `_WORD_LIKE`): with
    `digits=False` (unknown keys) only words, else also lowercase names with digits."""
    if len(key) > _MAX_SHOWN:
        return False
    return _WORD_LIKE.fullmatch(key) is not None or (
        digits and _NAME_LIKE.fullmatch(key) is not None)


def key_text(key: str) -> str:
    """How a message names a key: "key `name`", or a note when it looks like a value."""
    return f"key `{key}`" if looks_like_a_name(key) else \
        "key (not repeated: it looks like a value, perhaps a secret)"


def kind_name(value: object) -> str:
    if isinstance(value, bool):
        return _KIND_NAMES[bool]
    return _KIND_NAMES.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- loading


class _DocumentFailed(Exception):
    """Stop reading the current document (its remaining events are skipped)."""

    def __init__(
        self, line: int, column: int, message: str, hint: str = "", *, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.line, self.column, self.message, self.hint = line, column, message, hint
        self.fatal = fatal  # stop reading the file: going on could cost more than it tells


@dataclass
class _Frame:
    container: dict[str, Any] | list[Any]
    where: Where
    anchor: str | None
    discard: bool  # value of a duplicate key: read it, keep nothing
    size: int = 1
    key: tuple[str, tuple[int, int], bool] | None = None  # pending key, its mark, duplicate?


def _short(tag: str | None) -> str:
    text = tag or ""
    return "!!" + text[len(_YAML):] if text.startswith(_YAML) else text


def _mark(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _Composer:
    """Builds plain values from parser events with an explicit stack (no recursion)."""

    def __init__(self, path: str, limits: DocumentLimits) -> None:
        self.loader: EventSource
        self.path = path
        self.limits = limits
        self.diagnostics: list[Diagnostic] = []
        self.documents: list[Document] = []
        self.count = 0

    def run(self, loader: EventSource) -> None:
        self.loader = loader
        loader.get_event()  # StreamStart
        while not loader.check_event(yaml.StreamEndEvent):
            start = loader.get_event()  # DocumentStart
            self.count += 1
            if self.count > self.limits.max_documents:
                # The file is refused as a whole: this is its one error, not the last of
                # thousands found in the documents before it.
                most = self.limits.max_documents
                line, column = _mark(start)
                self.documents.clear()
                self.diagnostics[:] = [Diagnostic(
                    self.path, line, column,
                    f"too many YAML documents in one file (more than {most})",
                    f"split it into files of at most {most} documents; its other problems are "
                    "reported after that",
                )]
                return
            try:
                self.document(self.count - 1, start)
            except _DocumentFailed as failed:
                self.diagnostics.append(
                    Diagnostic(self.path, failed.line, failed.column, failed.message, failed.hint)
                )
                if failed.fatal or not self.skip_document():
                    return
            loader.get_event()  # DocumentEnd

    def skip_document(self) -> bool:
        """Read past the rest of a failed document; False if that would nest too deep.

        PyYAML's scanner slows down quadratically with flow nesting, so the depth limit
        holds while skipping too; past it the rest of the file is not read.
        """
        depth = len(self.stack)
        while not self.loader.check_event(yaml.DocumentEndEvent):
            event = self.loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > self.limits.max_depth:
                    line, column = _mark(event)
                    self.diagnostics.append(Diagnostic(
                        self.path, line, column,
                        f"nesting is deeper than {self.limits.max_depth} levels", _DEPTH_HINT,
                    ))
                    return False
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return True

    def document(self, index: int, start_event: yaml.Event) -> None:
        self.anchors: dict[str, tuple[Any, int] | None] = {}
        self.aliases = 0
        self.nodes = 0
        self.values: dict[Where, tuple[int, int]] = {}
        self.keys: dict[Where, tuple[int, int]] = {}
        self.stack: list[_Frame] = []
        self.root: list[Any] = []
        first = self.loader.peek_event()
        while not self.loader.check_event(yaml.DocumentEndEvent):
            self.step(self.loader.get_event())
        if not self.root:
            return
        data = self.root[0]
        if data is None and isinstance(first, yaml.ScalarEvent) and first.value == "":
            return  # an empty document (e.g. a trailing `---`) is ignored
        if not isinstance(data, dict):
            line, column = _mark(first)
            hint = "remove the leading `- `: the top level holds `key: value` lines; " \
                "separate several documents with `---`" if isinstance(data, list) \
                else "write the document as `key: value` lines"
            raise _DocumentFailed(
                line, column,
                f"a document must be a mapping of `key: value` pairs, not {kind_name(data)}",
                hint,
            )
        self.documents.append(Document(self.path, index, data, self.values, self.keys))

    # -- events

    def step(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.ScalarEvent):
            if self.taking_key():
                self.key(event)
            else:
                self.value(self.scalar(event), 1, event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self.start(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self.end()
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)

    def taking_key(self) -> bool:
        if not self.stack:
            return False
        top = self.stack[-1]
        return isinstance(top.container, dict) and top.key is None

    def child_where(self) -> tuple[Where, bool]:
        """Where the next value goes, and whether it is to be discarded."""
        if not self.stack:
            return (), False
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.where, len(top.container)), top.discard
        assert top.key is not None
        name, _, duplicate = top.key
        return (*top.where, name), top.discard or duplicate

    def key(self, event: yaml.ScalarEvent) -> None:
        top = self.stack[-1]
        assert isinstance(top.container, dict)
        line, column = _mark(event)
        name = event.value
        if event.tag is None and event.implicit[0]:
            tag = _RESOLVER.resolve(yaml.ScalarNode, name, event.implicit)
            if tag == f"{_YAML}merge":
                raise _DocumentFailed(
                    line, column, "merge keys (`<<`) are not supported",
                    "write the keys out, or use an alias (`*name`) for a whole value",
                )
        elif event.tag not in (None, "!", f"{_YAML}str"):
            raise _DocumentFailed(
                line, column, f"tag `{_short(event.tag)}` is not allowed on a key", _TAG_HINT
            )
        duplicate = name in top.container
        if duplicate and not top.discard:
            first_line = self.keys.get((*top.where, name), (0, 0))[0]
            self.diagnostics.append(Diagnostic(
                self.path, line, column,
                f"duplicate {key_text(name)}" + (f" in `{dotted(top.where)}`" if top.where
                                                  else ""),
                f"first given on line {first_line}; keep only one",
            ))
        top.key = (name, (line, column), duplicate)
        if not duplicate and not top.discard:
            self.keys[(*top.where, name)] = (line, column)

    def scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
        elif tag not in _SCALAR_TAGS:
            line, column = _mark(event)
            raise _DocumentFailed(line, column, f"tag `{_short(tag)}` is not allowed", _TAG_HINT)
        node = yaml.ScalarNode(tag, event.value, style=event.style)
        if tag == f"{_YAML}null":
            return None
        if tag == f"{_YAML}bool":
            return _CONSTRUCTOR.construct_yaml_bool(node)
        if tag == f"{_YAML}int":
            return _CONSTRUCTOR.construct_yaml_int(node)
        if tag == f"{_YAML}float":
            return _CONSTRUCTOR.construct_yaml_float(node)
        return event.value  # str, and timestamps stay text

    def start(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        line, column = _mark(event)
        if self.taking_key():
            raise _DocumentFailed(
                line, column, "a mapping key must be a plain string",
                "write the key as text, e.g. `name: value`; a list or mapping cannot be a key",
            )
        is_map = isinstance(event, yaml.MappingStartEvent)
        expected = f"{_YAML}map" if is_map else f"{_YAML}seq"
        if event.tag not in (None, "!", expected):
            raise _DocumentFailed(line, column, f"tag `{_short(event.tag)}` is not allowed",
                                  _TAG_HINT)
        if len(self.stack) + 1 > self.limits.max_depth:
            raise _DocumentFailed(
                line, column, f"nesting is deeper than {self.limits.max_depth} levels",
                _DEPTH_HINT, fatal=True,
            )
        where, discard = self.child_where()
        container: dict[str, Any] | list[Any] = {} if is_map else []
        if event.anchor is not None:
            self.anchors[event.anchor] = None  # open: an alias to it now would recurse
        if not discard:
            self.values[where] = (line, column)
        self.attach(container, discard)
        self.count_nodes(1, event)
        self.stack.append(_Frame(container, where, event.anchor, discard))

    def end(self) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (frame.container, frame.size)
        if self.stack:
            self.stack[-1].size += frame.size

    def alias(self, event: yaml.AliasEvent) -> None:
        line, column = _mark(event)
        if self.taking_key():
            raise _DocumentFailed(line, column, "an alias cannot be a mapping key",
                                  "write the key out as text")
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            raise _DocumentFailed(
                line, column, f"too many aliases in one document (more than "
                f"{self.limits.max_aliases})", fatal=True,
            )
        if event.anchor not in self.anchors:
            raise _DocumentFailed(line, column, f"unknown alias `*{event.anchor}`",
                                  f"define it first with `&{event.anchor}`")
        target = self.anchors[event.anchor]
        if target is None:
            raise _DocumentFailed(
                line, column, f"alias `*{event.anchor}` refers to a value that contains it",
                f"a value cannot contain itself; use `*{event.anchor}` only after the value "
                f"anchored with `&{event.anchor}` has ended",
            )
        value, size = target
        self.value(value, size, event)

    def value(self, value: Any, size: int, event: yaml.Event) -> None:
        where, discard = self.child_where()
        if not discard:
            self.values[where] = _mark(event)
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self.attach(value, discard)
        if self.stack:
            self.stack[-1].size += size
        self.count_nodes(size, event)

    def attach(self, value: Any, discard: bool) -> None:
        if not self.stack:
            self.root.append(value)
            return
        top = self.stack[-1]
        if isinstance(top.container, list):
            top.container.append(value)
        else:
            assert top.key is not None
            name, _, duplicate = top.key
            if not duplicate:
                top.container[name] = value
            top.key = None

    def count_nodes(self, size: int, event: yaml.Event) -> None:
        self.nodes += size
        if self.nodes > self.limits.max_nodes:
            line, column = _mark(event)
            if not self.aliases:
                raise _DocumentFailed(
                    line, column, f"document has too many values (more than "
                    f"{self.limits.max_nodes})", "split it into several documents", fatal=True,
                )
            raise _DocumentFailed(
                line, column,
                f"document is too large once aliases are expanded (more than "
                f"{self.limits.max_nodes} values)",
                "this looks like an alias bomb; use fewer aliases", fatal=True,
            )


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _syntax_hint(problem: str, context: str, opened: int | None) -> str:
    """How to fix a YAML syntax error, from PyYAML's problem and context texts."""
    at = f" at line {opened}" if opened else ""
    if "'\\t'" in problem:
        return "indent with spaces, not tabs"
    if problem.startswith("mapping values are not allowed"):
        return "check this line's indentation against the line above; put a value that " \
            "contains `: ` in quotes"
    if problem.endswith(("found ']'", "found '}'")):
        return f"remove the unmatched `{problem[-2]}`"
    if problem.startswith(("expected <block end>", "did not find expected")):
        return "check the indentation: keys of one mapping, and items of one list, start in " \
            f"the same column; this block starts{at}"
    if problem.startswith("could not find expected ':'"):
        return f"add `: ` after the key{at}, or put text that goes on over several lines in " \
            "quotes"
    if "flow sequence" in context:
        return f"close the `[` opened{at} with `]`; separate items with `,`"
    if "flow mapping" in context:
        return f"close the `{{` opened{at} with `}}`; separate entries with `,`"
    if "quoted scalar" in context:
        return f"close the quote opened{at}"
    if "cannot start any token" in problem:
        return "put the value in quotes"
    return f"{context}{at}" if context else ""


def _compose_clean(events: EventSource, path: str, limits: DocumentLimits) -> LoadResult | None:
    """The documents of a file without a fault, or None (its messages come from the
    pure-Python parser)."""
    composer = _Composer(path, limits)
    composer.run(events)
    return None if composer.diagnostics else LoadResult(tuple(composer.documents), ())


def load(data: bytes, path: str, limits: DocumentLimits | None = None) -> LoadResult:
    """Read every document of one file; problems become located diagnostics, never raised."""
    limits = limits or DocumentLimits()
    if len(data) > limits.max_bytes:  # sources read one byte past the limit, not the whole file
        return LoadResult((), (Diagnostic(
            path, 1, 1, f"file is too large (more than {limits.max_bytes} bytes)",
            "split it into several files",
        ),))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start]
        line = prefix.count(b"\n") + 1
        column = exc.start - (prefix.rfind(b"\n") + 1) + 1
        return LoadResult((), (Diagnostic(
            path, line, column, f"invalid UTF-8 (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8",
        ),))
    if _LIBYAML:
        fast = read_fast(text, lambda events: _compose_clean(events, path, limits))
        if fast is not None:
            return fast
    composer = _Composer(path, limits)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        composer.run(loader)
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        composer.diagnostics.append(Diagnostic(
            path, line, column,
            f"character U+{exc.character:04X} is not allowed in YAML"
            if isinstance(exc.character, int) else f"invalid character: {exc.reason}",
            "remove control characters",
        ))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        opened = exc.context_mark.line + 1 if exc.context_mark is not None else None
        composer.diagnostics.append(Diagnostic(
            path, line, column, f"YAML syntax error: {problem}",
            _syntax_hint(problem, exc.context or "", opened),
        ))
    finally:
        if loader is not None:
            loader.dispose()
    return LoadResult(tuple(composer.documents), tuple(composer.diagnostics))

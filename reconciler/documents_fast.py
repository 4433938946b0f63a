"""The libyaml fast path of `documents.load`: the same events, read by the C parser.

libyaml's parser is several times faster than PyYAML's pure-Python one, and both give the
same events and marks for most YAML they accept. Where they do not — characters and tabs
(`READ_APART`), `?` and empty values in flow collections (`Vetted`) — and for any file with a
fault at all (the two word syntax errors and take tags apart differently), `read_fast`
declines and the pure-Python parser reads the file from the start: its results and messages
are the ones documented and tested, with or without libyaml.
`test_libyaml_and_pure_python_read_every_file_alike` compares the two on generated files.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

import yaml

__all__ = ["LIBYAML", "EventSource", "Vetted", "read_fast"]

#: libyaml's C parser, when PyYAML was built with it.
LIBYAML: bool = getattr(yaml, "__with_libyaml__", False)
#: What PyYAML's reader refuses (`yaml.reader.Reader.NON_PRINTABLE`).
_NOT_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
#: What the two parsers read apart: libyaml takes a tab as a separator (`key\t: value`)
#: where PyYAML refuses it, places marks differently after a byte order mark inside the
#: text or the Unicode line breaks NEL, LS and PS, and marks the empty value of an explicit
#: key (`? x`) elsewhere. (Found by comparing both on generated files:
#: tests/unit/test_documents.py; see also `Vetted`.)
READ_APART = re.compile("[\t\ufeff\x85\u2028\u2029]|\\?(?: |$)", re.MULTILINE)

T = TypeVar("T")


class EventSource(Protocol):
    """What the composer reads: a parser's events (PyYAML's loaders, or `Vetted`)."""

    def get_event(self) -> yaml.Event: ...

    def peek_event(self) -> yaml.Event: ...

    def check_event(self, *choices: type[yaml.Event]) -> bool: ...


class _ReadApart(Exception):
    """The C parser met something the pure-Python one reads differently."""


class Vetted:
    """libyaml's events, watched for what PyYAML reads differently inside flow collections:
    a plain scalar holding `?` (`{a?: 1}`: PyYAML refuses it) and an empty value
    (`{a: , b: 1}`: marked one column apart); on either it raises `_ReadApart`. Every event
    goes through `get_event`. (libyaml gives a plain scalar the style '' where PyYAML gives
    None.)"""

    def __init__(self, loader: yaml.CSafeLoader) -> None:
        self._loader = loader
        self._flows: list[bool] = []  # open collections: flow style or not
        self._flow_level = 0

    def get_event(self) -> yaml.Event:
        event = cast(yaml.Event, self._loader.get_event())
        if isinstance(event, yaml.CollectionStartEvent):
            flow = bool(event.flow_style)
            self._flows.append(flow)
            self._flow_level += flow
        elif isinstance(event, yaml.CollectionEndEvent):
            self._flow_level -= self._flows.pop() if self._flows else False
        elif (isinstance(event, yaml.ScalarEvent) and self._flow_level and not event.style
              and (not event.value or "?" in event.value)):
            raise _ReadApart
        return event

    def peek_event(self) -> yaml.Event:
        return cast(yaml.Event, self._loader.peek_event())

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return bool(self._loader.check_event(*choices))


def read_fast(text: str, compose: Callable[[EventSource], T | None]) -> T | None:
    """`compose` run over libyaml's events of `text`, or None when the pure-Python parser
    must read the file: libyaml is missing, the text holds what the two read apart, the C
    parser fails, or `compose` returns None (a faulty file: its messages come from the one
    reference parser)."""
    if not LIBYAML or _NOT_PRINTABLE.search(text) or READ_APART.search(text):
        return None
    loader = yaml.CSafeLoader(text)
    try:
        return compose(Vetted(loader))
    except (yaml.YAMLError, _ReadApart):
        return None
    finally:
        loader.dispose()

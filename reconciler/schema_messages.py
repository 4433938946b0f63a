"""JSON Schema errors as located messages a person can act on.

`schema_diagnostics(document, validator)` validates one `documents.Document` and turns each
error into a `Diagnostic` at the offending key or value, with a hint (unknown key -> "did
you mean ...?", a number where text is wanted -> "put it in quotes"). Each JSON Schema rule
has its own message (`_MESSAGES`, rule -> function); a rule without one, or an error its
function does not cover, gets the validator's own message (kept out when values must not be
echoed). Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from reconciler.documents import (
    Document,
    Where,
    did_you_mean,
    dotted,
    key_text,
    kind_name,
    looks_like_a_name,
)
from reconciler.errors import Diagnostic

__all__ = ["schema_diagnostics"]


def schema_diagnostics(
    document: Document,
    validator: Validator,
    *,
    echo_values: bool = True,
    forbidden_keys: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[list[Diagnostic], set[Where]]:
    """Validate a document; return located diagnostics and the paths found wrong.

    `echo_values=False` keeps values out of messages (the host config may hold secrets in a
    wrong place). `forbidden_keys` gives a message and hint for keys that are refused on
    purpose (e.g. a literal `password`).
    """
    diagnostics: list[Diagnostic] = []
    wrong: set[Where] = set()
    for error in validator.iter_errors(document.data):
        where: Where = tuple(error.absolute_path)
        if error.validator in _VALUE_RULES:
            wrong.add(where)
        found = _Error(document, error, where, echo_values, forbidden_keys or {}, wrong)
        message = _MESSAGES.get(found.kind)
        described = message(found) if message is not None else None
        diagnostics.extend(described if described is not None else [found.generic()])
    return sorted(set(diagnostics)), wrong


@dataclass
class _Error:
    """One validation error with what its message is made of."""

    doc: Document
    error: ValidationError
    where: Where
    echo: bool
    forbidden: Mapping[str, tuple[str, str]]
    wrong: set[Where]  # paths found wrong, added to by the messages

    def __post_init__(self) -> None:
        self.kind = str(self.error.validator)
        self.schema: dict[str, Any] = self.error.schema if isinstance(self.error.schema,
                                                                      dict) else {}
        self.value: Any = self.error.instance
        self.rule: Any = self.error.validator_value
        self.name = f"`{dotted(self.where)}`" if self.where else "the document"
        self.about = _first_sentence(str(self.schema.get("description", "")))

    def at(self, message: str, hint: str = "", *, where: Where | None = None,
           key: bool = False) -> list[Diagnostic]:
        return [self.doc.diagnostic(self.where if where is None else where, message, hint,
                                    key=key)]

    def generic(self) -> Diagnostic:
        message = f"{self.name}: {self.error.message}" if self.echo else f"{self.name} is invalid"
        return self.doc.diagnostic(self.where, message)


_Message = Callable[[_Error], "list[Diagnostic] | None"]


def _unknown_keys(e: _Error) -> list[Diagnostic] | None:
    if not isinstance(e.value, dict):
        return None
    known = list(e.schema.get("properties", {}))
    out = []
    for key in e.value:
        if key in known:
            continue
        e.wrong.add((*e.where, key))
        if key in e.forbidden:
            message, hint = e.forbidden[key]
        else:
            if looks_like_a_name(key, digits=False):
                message = f"unknown key `{key}`" + (f" in {e.name}" if e.where else "")
            else:
                message = "unknown key" + (f" in {e.name}" if e.where else "") + \
                    " (not repeated: it looks like a value, perhaps a secret)"
            hint = did_you_mean(key, known)
        out.append(e.doc.diagnostic((*e.where, key), message, hint, key=True))
    return out


def _required(e: _Error) -> list[Diagnostic] | None:
    if not isinstance(e.value, dict):
        return None
    missing = [k for k in e.rule if k not in e.value]
    return [
        e.doc.diagnostic(e.where, f"{e.name} is missing the required key `{key}`",
                         _property_description(e.schema, key), key=True)
        for key in missing
    ]


def _type(e: _Error) -> list[Diagnostic]:
    names = [e.rule] if isinstance(e.rule, str) else list(e.rule)
    wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in names)
    hint = e.about
    if "string" in names and isinstance(e.value, bool | int | float):
        hint = f"YAML read this as {kind_name(e.value)}; put it in quotes to make it text"
    return e.at(f"{e.name} must be {wanted}, not {kind_name(e.value)}", hint)


def _one_of_values(e: _Error) -> list[Diagnostic]:
    allowed = e.rule if e.kind == "enum" else [e.rule]
    choices = ", ".join(f"`{a}`" for a in allowed)
    got = f" (got `{e.value}`)" if e.echo and isinstance(e.value, str | int | float) else ""
    hint = did_you_mean(e.value, map(str, allowed), listing=False) \
        if isinstance(e.value, str) else ""
    return e.at(f"{e.name} must be one of {choices}{got}", hint)


def _not_valid(e: _Error) -> list[Diagnostic]:
    what = e.schema.get("title", "value")
    if "propertyNames" in e.error.schema_path and isinstance(e.value, str):
        e.wrong.add((*e.where, e.value))
        return e.at(f"{key_text(e.value)} in {e.name} is not a valid {what}", e.about,
                    where=(*e.where, e.value), key=True)
    shown = f"`{e.value}` " if e.echo and isinstance(e.value, str) and len(e.value) < 80 else ""
    return e.at(f"{e.name}: {shown}is not a valid {what}", e.about)


_BOUND_WORDS = {"minimum": "at least", "maximum": "at most",
                "exclusiveMinimum": "greater than", "exclusiveMaximum": "less than"}


def _bound(e: _Error) -> list[Diagnostic]:
    return e.at(f"{e.name} must be {_BOUND_WORDS[e.kind]} {e.rule}", e.about)


def _empty(e: _Error) -> list[Diagnostic]:
    return e.at(f"{e.name} must not be empty", e.about)


def _unique(e: _Error) -> list[Diagnostic]:
    return e.at(f"{e.name} lists the same entry twice")


def _described(e: _Error) -> list[Diagnostic] | None:
    """A combination of rules (anyOf, ...) says what it wants in its description."""
    if not e.about:
        return None
    fix = _after_first_sentence(str(e.schema.get("description", "")))
    return e.at(e.about.rstrip("."), fix, key=True)


def _not_allowed(e: _Error) -> list[Diagnostic]:
    return e.at(f"{e.name} is not allowed here", e.about, key=True)


#: The message of each JSON Schema rule; None from a function: the generic message.
_MESSAGES: dict[str, _Message] = {
    "additionalProperties": _unknown_keys,
    "required": _required,
    "type": _type,
    "enum": _one_of_values,
    "const": _one_of_values,
    **dict.fromkeys(("pattern", "format", "minLength", "maxLength"), _not_valid),
    **dict.fromkeys(_BOUND_WORDS, _bound),
    "minProperties": _empty,
    "minItems": _empty,
    "uniqueItems": _unique,
    **dict.fromkeys(("anyOf", "oneOf", "not", "allOf"), _described),
    "propertyNames": _not_allowed,
    "false": _not_allowed,
}

#: Schema rules that judge a value itself (not the keys around it): its path is "wrong".
_VALUE_RULES = frozenset({"type", "enum", "const", "pattern", "format", "minLength", "maxLength",
                          "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})

_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "object": "a mapping", "array": "a list",
               "null": "null"}


def _property_description(schema: Mapping[str, Any], key: str) -> str:
    prop = schema.get("properties", {}).get(key, {})
    return _first_sentence(str(prop.get("description", ""))) if isinstance(prop, dict) else ""


def _first_sentence(text: str) -> str:
    return re.split(r"\.\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".")


def _after_first_sentence(text: str) -> str:
    """The rest of a description, as a hint: "... . Add x." -> "add x"."""
    parts = re.split(r"\.\s+(?=[A-Z])", text, maxsplit=1)
    rest = parts[1].strip().rstrip(".") if len(parts) > 1 else ""
    return rest[:1].lower() + rest[1:]

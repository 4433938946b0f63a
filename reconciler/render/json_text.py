"""JSON documents as bytes: indented by two spaces, UTF-8 unescaped, one newline at the end.

The same text as ``json.dumps(document, indent=2, ensure_ascii=False) + "\\n"`` (the plan
artifact's format since its first version), written by orjson's encoder in native code:
the standard library's C encoder does not indent, and its pure-Python one took 15 s of a
20 s `vmkeep plan -o json` at 10,000 VMs (docs/benchmarks.md). A document orjson refuses
(an integer beyond 64 bits, a lone surrogate) is written by the standard library instead.
Floats are the one difference: orjson may write the same number in another notation
(0.00006103515625 for 6.103515625e-05); the documents written here — plan, review, state —
have no floating-point fields (schemas/).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["json_bytes"]


def json_bytes(document: Any) -> bytes:
    """`document` as indented JSON text in UTF-8, with a final newline."""
    try:
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        return text.encode("utf-8", "surrogatepass")

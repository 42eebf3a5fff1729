"""The one strict JSON decoder for bytes that arrive from outside (MQTT payloads).

:func:`decode_object` accepts exactly one JSON object in UTF-8, at most ``max_bytes``
long, and refuses what Python's :mod:`json` would otherwise let through: ``NaN`` and
``Infinity`` (not JSON, and two parsers could disagree on them) and nesting deep enough
to exhaust the interpreter's stack. Every refusal is a :class:`JsonError` with a short
stable ``reason``, which each caller maps onto its own vocabulary (``netmon.contract``
result codes, ``netmon.signing`` envelope codes).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from netmon.errors import EXIT_INPUT, NetmonError

#: Why a payload was refused.
JsonReason = Literal["too_large", "not_utf8", "not_json", "non_finite", "not_object"]


class JsonError(NetmonError, ValueError):
    """A payload that is not one strict JSON object; ``reason`` is a :data:`JsonReason`."""

    exit_code = EXIT_INPUT

    def __init__(self, reason: JsonReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: JsonReason = reason
        self.detail = detail


def _reject_constant(name: str) -> NoReturn:
    raise JsonError("non_finite", f"non-finite number {name} in payload")


#: One decoder for every payload: ``json.loads`` would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_object(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode ``payload`` as one JSON object; :class:`JsonError` otherwise.

    The size is checked before anything is decoded, so an oversized message costs no
    parsing.
    """
    if len(payload) > max_bytes:
        raise JsonError("too_large", f"{len(payload)} bytes > {max_bytes} limit")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonError("not_utf8", f"payload is not UTF-8: {exc}") from None
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)",
                                       text, 0)
        obj = _DECODER.decode(text)
    except JsonError:
        raise
    except ValueError as exc:
        raise JsonError("not_json", f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise JsonError("not_json", "payload nests JSON too deeply") from None
    if not isinstance(obj, dict):
        raise JsonError("not_object", f"payload is a JSON {type(obj).__name__}, not an object")
    return obj


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix: how every time is
    written on the wire (the contract's models and :mod:`netmon.wire` alike)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

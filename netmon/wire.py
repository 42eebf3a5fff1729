"""Result and status messages as plain data, checked and serialised without pydantic.

The probe's run-time process is to run without pydantic (issue 20: pydantic and the models
built with it are ~16 MB of a probe's ~43). :mod:`netmon.contract` stays the one definition
of the wire contract: this module holds no field list, bound or pattern of its own. It
reads the contract's JSON schema exported to ``netmon/wire_schema.json`` (by
:mod:`netmon.wireschema`, kept equal to the models by a test) and checks a message with
a validator compiled from it by fastjsonschema, plus the few rules the contract's Python
validators add beyond the schema (metric names and values, a started_at not in the
future, a declared method), whose constants come from the same export.

The bytes are those :meth:`netmon.contract.ResultMessage.to_json` and
:meth:`netmon.contract.StatusMessage.to_json` produce for the same message: fields in the
models' order with their defaults, numbers of ``number`` fields as floats, times in
RFC 3339 UTC with milliseconds, only the metrics that were measured, and floats written
the way pydantic-core writes them (:func:`format_float`). ``tests/core/test_wire.py``
checks both directions against the models: real results built here validate with the
model into the same bytes, and what the model refuses on a fuzz set is refused here.

This module imports nothing that imports pydantic.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

#: The contract's export (see :mod:`netmon.wireschema`, which writes it).
SCHEMA_FILE = Path(__file__).with_name("wire_schema.json")


class WireError(ValueError):
    """A message the contract refuses; the text names the field and why."""


# --------------------------------------------------------------------------- the export


@dataclass(frozen=True)
class _Contract:
    schemas: dict[str, dict[str, Any]]
    validators: dict[str, Callable[[Any], Any]]
    methods: frozenset[str]
    metric_name: re.Pattern[str]
    signed_metrics: frozenset[str]
    max_speed_mbps: float
    max_exact_int: int
    max_future: timedelta


def _as_model(node: Any) -> Any:
    """The schema with the model's meaning where JSON Schema's differs: an object with
    ``patternProperties`` is a ``dict[Pattern, X]`` in the model, which refuses keys that
    do not match, so it gets ``additionalProperties: false``. (fastjsonschema already
    reads a final ``$`` as the end of the text, as pydantic's regex engine does.)"""
    if isinstance(node, list):
        return [_as_model(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_model(value) for key, value in node.items()}
    if "patternProperties" in node:
        out.setdefault("additionalProperties", False)
    return out


@cache
def _contract() -> _Contract:
    import fastjsonschema  # the agent extra; loaded when the first message is checked

    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    rules = data["rules"]
    schemas = {kind: data[kind] for kind in ("result", "status")}
    validators = {kind: fastjsonschema.compile(_as_model(schema), use_default=False)
                  for kind, schema in schemas.items()}
    return _Contract(
        schemas=schemas, validators=validators, methods=frozenset(rules["methods"]),
        metric_name=re.compile(rules["metric_name"]),
        signed_metrics=frozenset(rules["signed_metrics"]),
        max_speed_mbps=float(rules["max_speed_mbps"]),
        max_exact_int=int(rules["max_exact_int"]),
        max_future=timedelta(seconds=float(rules["max_future_s"])))


# --------------------------------------------------------------------------- values


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix (the contract's)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_float(value: float) -> str:
    """``value`` as pydantic-core writes a float in JSON: Python's ``repr`` except that a
    negative exponent has no leading zero (``1e-6``) and ``1e-05`` is written ``0.00001``."""
    text = repr(value)
    mantissa, sep, exponent = text.partition("e-")
    if not sep:
        return text
    power = int(exponent)
    if power == 5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e-{power}"


def _dump(value: Any, out: list[str]) -> None:
    # json.dumps cannot be told how to write floats; the shapes here are plain JSON.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise WireError(f"non-finite number {value}")
        out.append(format_float(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _dump(item, out)
        out.append("]")
    else:
        raise WireError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with pydantic-core's float format (:func:`format_float`)."""
    out: list[str] = []
    _dump(value, out)
    return "".join(out).encode()


# --------------------------------------------------------------------------- shaping


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(root["$defs"][ref.rsplit("/", 1)[-1]])
    return schema


def _shape(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> Any:
    """``value`` as the model would serialise it: defaults filled in the schema's order,
    numbers of ``number`` fields as floats, aware datetimes as contract times, UUIDs as
    text. Values of the wrong kind are left alone for the validator to name."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        if value is None:
            return None
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        return _shape(value, options[0], root, where) if len(options) == 1 else value
    kind = schema.get("type")
    if kind == "integer" and isinstance(value, (bool, float)):
        # The contract's integers are strict: JSON Schema would take 1.0 (and fastjsonschema
        # True) where the model refuses them.
        raise WireError(f"{where}: must be an integer, not {value!r}")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise WireError(f"{where}: {value} is too large for a number") from None
    if kind == "string" and isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise WireError(f"{where}: a time needs a time zone")
        return format_time(value)
    if kind == "string" and isinstance(value, uuid.UUID):
        return str(value)
    if kind == "array" and isinstance(value, (list, tuple)):
        items = schema.get("items", {})
        return [_shape(v, items, root, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "object" and isinstance(value, Mapping):
        props: dict[str, Any] = schema.get("properties", {})
        if "patternProperties" in schema:
            (inner,) = schema["patternProperties"].values()
            return {k: _shape(v, inner, root, f"{where}.{k}") for k, v in value.items()}
        if schema.get("additionalProperties") is True:  # metrics: only what was measured
            known = {k: _shape(value[k], props[k], root, f"{where}.{k}") for k in props
                     if value.get(k) is not None}
            return known | {k: v for k, v in value.items() if k not in props and v is not None}
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if key in value:
                out[key] = _shape(value[key], sub, root, f"{where}.{key}".lstrip("."))
            elif "default" in sub:
                out[key] = sub["default"]
        out.update({k: v for k, v in value.items() if k not in props})  # refused below
        return out
    return value


# --------------------------------------------------------------------------- checks


def _check_metrics(metrics: Any, c: _Contract) -> None:
    # The contract's Metrics._check_all_numbers, with its constants from the export.
    if not isinstance(metrics, Mapping):
        return  # the schema names it
    for key, value in metrics.items():
        if not isinstance(key, str) or not c.metric_name.fullmatch(key):
            raise WireError(f"metrics: metric name {key!r} must be lower_snake_case, "
                            "<= 64 chars")
        if value is None:
            continue
        if isinstance(value, bool):
            raise WireError(f"metrics: metric {key!r} is a boolean; send 0 or 1")
        if not isinstance(value, (int, float)):
            raise WireError(f"metrics: metric {key!r} must be a number, "
                            f"got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > c.max_exact_int:
            raise WireError(f"metrics: metric {key!r} is too large (more than 2**53)")
        if not math.isfinite(value):
            raise WireError(f"metrics: metric {key!r} is not finite ({value})")
        if value < 0 and key not in c.signed_metrics:
            raise WireError(f"metrics: metric {key!r} is negative ({value})")
        if key.endswith("_mbps") and value > c.max_speed_mbps:
            raise WireError(f"metrics: metric {key!r}={value} is above "
                            f"{c.max_speed_mbps:g} Mb/s")
        if key.endswith("_pct") and value > 100:
            raise WireError(f"metrics: metric {key!r}={value} is outside 0-100")


def _time(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireError(f"{where}: must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise WireError(f"{where}: {value!r} has no time zone")
    return parsed


def _versioned(message: Mapping[str, Any]) -> None:
    # The collector reads the version before anything else and has no default for it.
    if "schema" not in message:
        raise WireError("schema: missing (the contract's version)")


def _validate(kind: str, data: dict[str, Any], c: _Contract) -> None:
    try:
        c.validators[kind](data)
    except ValueError as exc:  # fastjsonschema's JsonSchemaValueException
        raise WireError(str(exc).replace("data.", "", 1).replace("data ", "message ", 1)) \
            from None


def result_wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """The checked wire object of a result message (a mapping of the contract's fields,
    times as aware datetimes or contract strings); :class:`WireError` names what the
    contract refuses."""
    c = _contract()
    _versioned(message)
    _check_metrics(message.get("metrics"), c)
    if "id" not in message:  # the model's default_factory
        message = {**message, "id": uuid.uuid4()}
    data: dict[str, Any] = _shape(message, c.schemas["result"], c.schemas["result"], "")
    _validate("result", data, c)
    if data["method"] not in c.methods:
        raise WireError(f"method: {data['method']!r} is not a declared method")
    started = _time(data["started_at"], "started_at")
    if started is not None and started > datetime.now(UTC) + c.max_future:
        raise WireError("started_at: more than a day in the future (probe clock wrong?)")
    return data


def status_wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """The checked wire object of a status message (see :func:`result_wire`)."""
    c = _contract()
    _versioned(message)
    data: dict[str, Any] = _shape(message, c.schemas["status"], c.schemas["status"], "")
    _validate("status", data, c)
    for key in ("at", "started_at", "last_result_at", "oldest_waiting_at"):
        _time(data.get(key), key)
    for i, link in enumerate(data.get("links") or ()):
        _time(link.get("last_result_at"), f"links[{i}].last_result_at")
    update = data.get("update")
    if isinstance(update, dict):
        _time(update.get("last_event_at"), "update.last_event_at")
    return data


def encode_result(message: Mapping[str, Any]) -> bytes:
    """The result's UTF-8 JSON payload, checked (:func:`result_wire`)."""
    return dumps(result_wire(message))


def encode_status(message: Mapping[str, Any]) -> bytes:
    """The status message's UTF-8 JSON payload, checked (:func:`status_wire`)."""
    return dumps(status_wire(message))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ErrorInfo:
    """Why a test failed (the contract's ``error``)."""

    code: str
    message: str


@dataclass(frozen=True)
class Result:
    """One test's outcome as plain data; :meth:`to_json` checks it against the contract.

    The same fields as :class:`netmon.contract.ResultMessage`."""

    probe_id: str
    link: str
    access: str
    isp: str
    method: str
    target: str
    started_at: datetime
    duration_s: float
    agent_version: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: ErrorInfo | None = None
    flags: tuple[str, ...] = ()
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def ok(self) -> bool:
        """True when the test succeeded."""
        return self.error is None

    def wire(self) -> dict[str, Any]:
        """The checked wire object (:func:`result_wire`)."""
        return result_wire({
            "schema": 1, "id": self.id, "probe_id": self.probe_id, "link": self.link,
            "access": self.access, "isp": self.isp, "method": self.method,
            "target": self.target, "started_at": self.started_at,
            "duration_s": self.duration_s, "metrics": dict(self.metrics),
            "error": None if self.error is None else
            {"code": self.error.code, "message": self.error.message},
            "flags": list(self.flags), "agent_version": self.agent_version})

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published, checked against the contract."""
        return dumps(self.wire())

    def with_metrics(self, metrics: Mapping[str, float]) -> Result:
        """This result with ``metrics`` added (they win over measured ones)."""
        return replace(self, metrics={**self.metrics, **metrics})

    def with_flags(self, flags: tuple[str, ...]) -> Result:
        """This result with ``flags`` added, each once, in order."""
        return replace(self, flags=tuple(dict.fromkeys(self.flags + flags)))

"""Result and status messages written, and receipts read, without pydantic.

The probe's run-time process is to run without pydantic (issue 20: pydantic and the models
built with it are ~16 MB of a probe's ~43). :mod:`netmon.contract` stays the one definition
of the wire contract: this module holds no field list, bound or pattern of its own. It
reads the contract's JSON schema exported to ``netmon/wire_schema.json`` (by
:mod:`netmon.wireschema`, kept equal to the models by a test) and checks a message by
walking that schema (:func:`_check`: the keywords pydantic writes, read as pydantic means
them), plus the few rules the contract's Python validators add beyond the schema (metric
names and values, a started_at not in the future, a declared method), whose constants come
from the same export (the declared methods from :data:`netmon.declarations.DECLARATIONS`
itself, as the contract reads them).

Why a schema walker and not a compiled checker: fastjsonschema's compiled validators for
the two messages measured 3.4 MB resident (4.9 MB as generated code), a tenth of the
probe's 35 MB goal; this module with its loaded schema adds 0.8 MB where pydantic with
the models adds 11.8 (``benchmarks/agent/wirecost.py``).

The bytes are those :meth:`netmon.contract.ResultMessage.to_json` and
:meth:`netmon.contract.StatusMessage.to_json` produce for the same message: fields in the
models' order with their defaults, numbers of ``number`` fields as floats, times in
RFC 3339 UTC with milliseconds, only the metrics that were measured, and floats written
the way pydantic-core writes them (:func:`format_float`). Tests hold both directions
against the models: real results of every method and a real status message built here
are the models' bytes and read back equal (``tests/agent/test_wire_results.py``), and what
the models refuse on a fuzz set is refused here, and a receipt is read as the model reads
it (``tests/core/test_wire.py``).

This module imports nothing that imports pydantic.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from netmon.declarations import DECLARATIONS
from netmon.jsonutil import format_time

#: The contract's export (see :mod:`netmon.wireschema`, which writes it).
SCHEMA_FILE = Path(__file__).with_name("wire_schema.json")


class WireError(ValueError):
    """A message the contract refuses; the text names the field and why. ``reason`` is
    the contract's short code (:class:`netmon.contract.ContractError`'s)."""

    def __init__(self, detail: str, reason: str = "invalid") -> None:
        super().__init__(f"{reason}: {detail}" if reason != "invalid" else detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- the export


@dataclass(frozen=True)
class _Contract:
    schemas: dict[str, dict[str, Any]]
    #: Per message kind and model title, the defaults made by factories (see wireschema).
    factories: dict[str, dict[str, dict[str, Any]]]
    metric_name: re.Pattern[str]
    signed_metrics: frozenset[str]
    max_speed_mbps: float
    max_exact_int: int
    max_future: timedelta
    schema_version: int
    max_message_bytes: int
    #: Method -> option -> what it names ("target", "local"): netmon.methods.Role's values.
    option_roles: dict[str, dict[str, str]]


#: The JSON Schema keywords the export uses; :func:`_contract` refuses a schema with any
#: other, so a contract change this checker does not understand fails its tests.
_KEYWORDS = frozenset({
    "$defs", "$ref", "additionalProperties", "anyOf", "const", "default", "description",
    "enum", "exclusiveMinimum", "exclusiveMaximum", "format", "items", "maxItems",
    "minItems", "maxLength", "minLength", "maxProperties", "maximum", "minimum", "pattern",
    "patternProperties", "properties", "required", "title", "type"})
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
#: RFC 3339 with its offset: what the contract writes (fromisoformat alone also takes
#: ISO 8601's basic format, which the models refuse).
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def _keywords(node: Any, where: str, named: bool = False) -> None:
    if isinstance(node, list):
        for item in node:
            _keywords(item, where)
    elif isinstance(node, dict):
        for key, value in node.items():
            if not named and key not in _KEYWORDS:
                raise WireError(f"{where}: JSON Schema keyword {key!r} is not supported")
            if not named and key == "format" and value not in ("uuid", "date-time"):
                raise WireError(f"{where}: JSON Schema format {value!r} is not supported")
            _keywords(value, f"{where}.{key}",
                      named=not named and key in ("properties", "$defs", "patternProperties"))


@cache
def _contract() -> _Contract:
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    rules = data["rules"]
    schemas = {kind: data[kind] for kind in ("result", "status", "receipt")}
    for kind, schema in schemas.items():
        _keywords(schema, kind)
    return _Contract(
        schemas=schemas, factories=data["factory_defaults"],
        metric_name=re.compile(rules["metric_name"]),
        signed_metrics=frozenset(rules["signed_metrics"]),
        max_speed_mbps=float(rules["max_speed_mbps"]),
        max_exact_int=int(rules["max_exact_int"]),
        max_future=timedelta(seconds=float(rules["max_future_s"])),
        schema_version=int(rules["schema_version"]),
        max_message_bytes=int(rules["max_message_bytes"]),
        option_roles=rules["option_roles"])


def option_roles(method: str) -> dict[str, str] | None:
    """What each option of a declared ``method`` names, as :func:`netmon.methods.option_roles`
    gives it read off the option model (the role's value: ``"target"``, ``"local"``), from
    the export; None for a method the export does not know (one registered at run time)."""
    return _contract().option_roles.get(method)


# --------------------------------------------------------------------------- values


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
        resolved: dict[str, Any] = root["$defs"][ref.rsplit("/", 1)[-1]]
        return resolved
    return schema


def _shape(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str,
           factories: dict[str, dict[str, Any]]) -> Any:
    """``value`` as the model would serialise it: defaults filled in the schema's order,
    numbers of ``number`` fields as floats, aware datetimes as contract times, UUIDs as
    text. Values of the wrong kind are left alone for the validator to name."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        if value is None:
            return None
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        return _shape(value, options[0], root, where, factories) if len(options) == 1 else value
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise WireError(f"{where}: {value} is too large for a number") from None
    if kind == "string" and isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise WireError(f"{where}: a time needs a time zone")
        return format_time(value)
    if kind == "string" and schema.get("format") == "date-time" and isinstance(value, str) \
            and _RFC3339.fullmatch(value):
        # As the model does: to UTC, milliseconds (a bad date is named by the checker).
        with contextlib.suppress(ValueError):
            return format_time(datetime.fromisoformat(value))
    if kind == "string" and isinstance(value, uuid.UUID):
        return str(value)
    if kind == "array" and isinstance(value, (list, tuple)):
        items = schema.get("items", {})
        return [_shape(v, items, root, f"{where}[{i}]", factories) for i, v in enumerate(value)]
    if kind == "object" and isinstance(value, Mapping):
        props: dict[str, Any] = schema.get("properties", {})
        if "patternProperties" in schema:
            (inner,) = schema["patternProperties"].values()
            return {k: _shape(v, inner, root, f"{where}.{k}", factories) for k, v in value.items()}
        if schema.get("additionalProperties") is True:  # metrics: only what was measured
            known = {k: _shape(value[k], props[k], root, f"{where}.{k}", factories) for k in props
                     if value.get(k) is not None}
            return known | {k: v for k, v in value.items() if k not in props and v is not None}
        out: dict[str, Any] = {}
        made = factories.get(schema.get("title", ""), {})
        for key, sub in props.items():
            if key in value:
                out[key] = _shape(value[key], sub, root, f"{where}.{key}".lstrip("."), factories)
            elif "default" in sub:  # a copy: the schema's own list must stay empty
                default = sub["default"]
                out[key] = list(default) if isinstance(default, list) else default
            elif key in made:
                out[key] = json.loads(json.dumps(made[key]))  # a fresh copy
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
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise WireError(f"{where}: {value!r} is not an RFC 3339 time with its offset")
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


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    # pydantic's (Rust) regex: a final ``$`` is the end of the text, not before a newline.
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _is(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":  # strict in the contract: JSON Schema alone would take 1.0
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, Mapping)
    raise WireError(f"JSON Schema type {kind!r} is not supported")


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    """Raise :class:`WireError` naming ``where`` when ``value`` breaks ``schema`` (the
    subset of JSON Schema pydantic writes for the contract, read as pydantic means it)."""
    schema = _resolve(schema, root)
    name = where or "message"
    if "anyOf" in schema:
        problems = []
        for option in schema["anyOf"]:
            try:
                _check(value, option, root, where)
                break
            except WireError as exc:
                problems.append(str(exc))
        else:
            real = [p for p in problems if "must be null" not in p]
            raise WireError(real[0] if len(real) == 1 else "; ".join(problems))
    kind = schema.get("type")
    if kind is not None and not _is(kind, value):
        raise WireError(f"{name}: must be {kind}, not {type(value).__name__}")
    if "const" in schema and value != schema["const"]:
        raise WireError(f"{name}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise WireError(f"{name}: must be one of {', '.join(map(repr, schema['enum']))}")
    if isinstance(value, str):
        _check_text(value, schema, name)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, name)
    elif isinstance(value, (list, tuple)):
        if len(value) > schema.get("maxItems", len(value)) \
                or len(value) < schema.get("minItems", 0):
            raise WireError(f"{name}: {len(value)} items is outside the allowed count")
        items = schema.get("items")
        for i, item in enumerate(value):
            if items is not None:
                _check(item, items, root, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        _check_object(value, schema, root, where)


def _check_text(value: str, schema: dict[str, Any], name: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise WireError(f"{name}: shorter than {schema['minLength']} character(s)")
    if len(value) > schema.get("maxLength", len(value)):
        raise WireError(f"{name}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        raise WireError(f"{name}: {value!r} does not match {schema['pattern']}")
    fmt = schema.get("format")
    if fmt == "uuid" and not _UUID.fullmatch(value):
        raise WireError(f"{name}: {value!r} is not a UUID")
    if fmt == "date-time":
        _time(value, name)


def _check_number(value: float, schema: dict[str, Any], name: str) -> None:
    # Written as "not inside" so that NaN, which compares false, is refused.
    if "minimum" in schema and not value >= schema["minimum"]:
        raise WireError(f"{name}: {value} is below {schema['minimum']}")
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        raise WireError(f"{name}: {value} must be above {schema['exclusiveMinimum']}")
    if "maximum" in schema and not value <= schema["maximum"]:
        raise WireError(f"{name}: {value} is above {schema['maximum']}")
    if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
        raise WireError(f"{name}: {value} must be below {schema['exclusiveMaximum']}")


def _check_object(value: Mapping[Any, Any], schema: dict[str, Any], root: dict[str, Any],
                  where: str) -> None:
    name = where or "message"
    for key in schema.get("required", ()):
        if key not in value:
            raise WireError(f"{f'{where}.' if where else ''}{key}: missing")
    if len(value) > schema.get("maxProperties", len(value)):
        raise WireError(f"{name}: more than {schema['maxProperties']} entries")
    props: dict[str, Any] = schema.get("properties", {})
    patterns: dict[str, Any] = schema.get("patternProperties", {})
    # A dict[Pattern, X] field refuses other keys, which JSON Schema alone would allow.
    extra = schema.get("additionalProperties", not patterns)
    for key, item in value.items():
        at = f"{where}.{key}" if where else str(key)
        if key in props:
            _check(item, props[key], root, at)
            continue
        matched = [sub for pattern, sub in patterns.items()
                   if isinstance(key, str) and _regex(pattern).search(key)]
        for sub in matched:
            _check(item, sub, root, at)
        if matched:
            continue
        if extra is False:
            raise WireError(f"{at}: not a field of the contract")
        if isinstance(extra, dict):
            _check(item, extra, root, at)


def result_wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """The checked wire object of a result message (a mapping of the contract's fields,
    times as aware datetimes or contract strings); :class:`WireError` names what the
    contract refuses."""
    c = _contract()
    _versioned(message)
    _check_metrics(message.get("metrics"), c)
    if "id" not in message:  # the model's default_factory
        message = {**message, "id": uuid.uuid4()}
    data: dict[str, Any] = _shape(message, c.schemas["result"], c.schemas["result"], "",
                                   c.factories["result"])
    _check(data, c.schemas["result"], c.schemas["result"], "")
    # The live declarations, as the contract checks them (a test may declare a method
    # for its duration), not the export's copy of them.
    if data["method"] not in DECLARATIONS:
        raise WireError(f"method: {data['method']!r} is not a declared method")
    started = _time(data["started_at"], "started_at")
    if started is not None and started > datetime.now(UTC) + c.max_future:
        raise WireError("started_at: more than a day in the future (probe clock wrong?)")
    return data


def status_wire(message: Mapping[str, Any]) -> dict[str, Any]:
    """The checked wire object of a status message (see :func:`result_wire`)."""
    c = _contract()
    _versioned(message)
    data: dict[str, Any] = _shape(message, c.schemas["status"], c.schemas["status"], "",
                                   c.factories["status"])
    _check(data, c.schemas["status"], c.schemas["status"], "")
    return data


def encode_result(message: Mapping[str, Any]) -> bytes:
    """The result's UTF-8 JSON payload, checked (:func:`result_wire`)."""
    return dumps(result_wire(message))


def encode_status(message: Mapping[str, Any]) -> bytes:
    """The status message's UTF-8 JSON payload, checked (:func:`status_wire`)."""
    return dumps(status_wire(message))


# --------------------------------------------------------------------------- results


@cache
def _metric_fields() -> frozenset[str]:
    # The contract's declared metrics (Metrics' fields), from the export.
    result = _contract().schemas["result"]
    return frozenset(result["$defs"]["Metrics"]["properties"])


class Metrics:
    """The numbers a test measured, read as :class:`netmon.contract.Metrics` is read: a
    declared metric not measured reads ``None``, a measured one (declared or extra) its
    value, any other name is an AttributeError; :meth:`values` is what was measured.

    Checked with the rest of the result (:meth:`Result.to_json`), not here."""

    __slots__ = ("_values",)
    _values: dict[str, float]

    def __init__(self, values: Mapping[str, float] | None = None, **more: float) -> None:
        merged = {**(values or {}), **more}
        object.__setattr__(self, "_values", {k: v for k, v in merged.items() if v is not None})

    def values(self) -> dict[str, float]:
        """Every metric that was measured, as a new plain dict."""
        return dict(self._values)

    def __getattr__(self, name: str) -> float | None:
        # Only reached for names that are not attributes of the class itself.
        values: dict[str, float] = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        if name in _metric_fields():
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Metrics is frozen")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metrics) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"Metrics({self._values!r})"


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
    metrics: Metrics = field(default_factory=Metrics)
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
            "duration_s": self.duration_s, "metrics": self.metrics.values(),
            "error": None if self.error is None else
            {"code": self.error.code, "message": self.error.message},
            "flags": list(self.flags), "agent_version": self.agent_version})

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload as published, checked against the contract."""
        return dumps(self.wire())

    def with_metrics(self, metrics: Mapping[str, float]) -> Result:
        """This result with ``metrics`` added (they win over measured ones)."""
        return replace(self, metrics=Metrics({**self.metrics.values(), **metrics}))

    def with_flags(self, flags: tuple[str, ...]) -> Result:
        """This result with ``flags`` added, each once, in order."""
        return replace(self, flags=tuple(dict.fromkeys(self.flags + flags)))


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class Receipt:
    """The collector's receipt (:class:`netmon.contract.ReceiptMessage`), as plain data."""

    probe_id: str
    ids: tuple[uuid.UUID, ...]
    at: datetime


def parse_receipt(payload: bytes, topic_probe_id: str | None = None) -> Receipt:
    """Check raw MQTT bytes as a receipt, as :func:`netmon.contract.parse_receipt` does
    (the same reasons: ``too_large``, ``not_utf8``, ``not_json``, ``not_object``,
    ``unsupported_schema``, ``invalid``, ``probe_mismatch``); :class:`WireError`."""
    from netmon.jsonutil import JsonError, decode_object  # pydantic-free

    c = _contract()
    try:
        obj = decode_object(payload, c.max_message_bytes)
    except JsonError as exc:
        raise WireError(exc.detail, "invalid" if exc.reason == "non_finite" else exc.reason) \
            from None
    version = obj.get("schema")
    if version != c.schema_version or isinstance(version, bool):
        raise WireError(f"schema is {version!r}; this reader understands {c.schema_version}",
                        "unsupported_schema")
    if isinstance(version, float):
        obj["schema"] = int(version)  # the model reads 1.0 as the version 1
    _check(obj, c.schemas["receipt"], c.schemas["receipt"], "")
    at = _time(obj["at"], "at") if "at" in obj else datetime.now(UTC)
    assert at is not None
    if topic_probe_id is not None and obj["probe_id"] != topic_probe_id:
        raise WireError(f"payload probe_id {obj['probe_id']!r} != topic probe "
                        f"{topic_probe_id!r}", "probe_mismatch")
    return Receipt(probe_id=obj["probe_id"], ids=tuple(uuid.UUID(i) for i in obj["ids"]),
                   at=at)

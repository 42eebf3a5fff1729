"""Export the wire contract's JSON schema for the light checker (:mod:`netmon.wire`).

:mod:`netmon.contract` stays the one definition of the result and status messages. The
agent's run-time process is to check what it sends without pydantic (issue 20: ~16 MB of
a probe's memory), so the schema pydantic derives from those models, and the constants
of the contract's own validators, are exported to ``netmon/wire_schema.json`` and
committed; ``tests/core/test_wire.py`` keeps the file equal to what this module builds
now, so a change to the contract that is not re-exported fails the tests.

Regenerate after changing the contract::

    .venv/bin/python -m netmon.wireschema --write
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from netmon import contract
from netmon.methods import DECLARATIONS, option_roles

#: Where the export lives, next to the light checker that reads it.
SCHEMA_FILE = Path(__file__).with_name("wire_schema.json")


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model its fields hold, however nested in the annotations."""
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for info in annotation.model_fields.values():
                    visit(info.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return found


def factory_defaults(root: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Per model (by its schema title), the serialised value of each field whose default
    comes from a factory (JSON Schema has no ``default`` for those): ``{}`` for metrics,
    ``{}`` for an empty mapping. Per-message values (a fresh UUID, the time now) are left
    to the writer."""
    out: dict[str, dict[str, Any]] = {}
    for model in _models(root):
        for name, info in model.model_fields.items():
            if info.default_factory is None:
                continue
            value = info.default_factory()  # type: ignore[call-arg]
            if isinstance(value, (uuid.UUID, datetime)):
                continue
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json", exclude_none=True)
            elif isinstance(value, (tuple, list)):
                value = list(value)
            out.setdefault(model.model_config.get("title") or model.__name__, {})[
                info.alias or name] = value
    return out


def build() -> dict[str, Any]:
    """The export: the JSON schemas (validation mode, wire names) of the two messages the
    agent writes and of the receipt it reads, and the values the contract's Python
    validators check beyond the schema."""
    return {
        "result": contract.ResultMessage.model_json_schema(by_alias=True),
        "status": contract.StatusMessage.model_json_schema(by_alias=True),
        "receipt": contract.ReceiptMessage.model_json_schema(by_alias=True),
        "factory_defaults": {
            kind: factory_defaults(model) for kind, model in (
                ("result", contract.ResultMessage), ("status", contract.StatusMessage),
                ("receipt", contract.ReceiptMessage))},
        "rules": {
            "methods": list(DECLARATIONS),
            # What each method's options name, for the remote-config rules of a probe
            # whose run time holds no option model (agent/remote_config.py).
            "option_roles": {name: {opt: role.value for opt, role in
                                    option_roles(decl.options).items()}
                             for name, decl in DECLARATIONS.items()},
            "metric_name": contract._METRIC_NAME.pattern,
            "signed_metrics": sorted(contract.SIGNED_METRICS),
            "max_speed_mbps": contract.MAX_SPEED_MBPS,
            "max_exact_int": 2**53,
            "max_future_s": contract.MAX_FUTURE.total_seconds(),
            "schema_version": contract.SCHEMA_VERSION,
            "max_message_bytes": contract.MAX_MESSAGE_BYTES,
        },
    }


def render() -> str:
    """The file's text (stable: sorted keys are not used, the models' order is kept)."""
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m netmon.wireschema [--write|--check]``."""
    parser = argparse.ArgumentParser(
        prog="python -m netmon.wireschema",
        description="Export the wire contract's JSON schema to netmon/wire_schema.json.")
    parser.add_argument("--write", action="store_true", help="rewrite the file")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed file differs from the contract")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        same = SCHEMA_FILE.exists() and SCHEMA_FILE.read_text(encoding="utf-8") == text
        if not same:
            print(f"{SCHEMA_FILE} is stale: run python -m netmon.wireschema --write",
                  file=sys.stderr)
        return 0 if same else 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Full validation of the run time's rare inputs in a short-lived child process.

A signed remote test plan and a release manifest arrive a few times a year; validating
them takes the pydantic models (:class:`netmon.plan.TestPlan`, the method options,
:class:`netmon.contract.ReleaseManifest`, the remote-config :class:`netmon.signing.
Envelope`), about 15 MB that the run time does not keep
(issue 20). :func:`validate` runs ``python -m agent.validate_child KIND [LINK...]`` with
the payload on stdin; the child validates with the models and prints the validated JSON
(or every problem, ``key: why``) and exits, taking pydantic with it.

A plan comes back as :mod:`agent.runconfig` builds it (:func:`agent.runconfig.
plan_from_json`): each test's table, its method's kind and every option. A manifest
comes back as the model dumps it (by alias: ``schema``); a config envelope as
:meth:`netmon.signing.Envelope.to_json` writes it (read by :func:`netmon.signing.
parse_envelope`, so it is accepted or refused exactly as ``netmon.signing.verify`` does).

This module imports nothing that imports pydantic; only :func:`main` (the child) does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection
from typing import Any, Literal

from netmon.errors import EXIT_INPUT, NetmonError

Kind = Literal["plan", "manifest", "envelope"]
KINDS: tuple[Kind, ...] = ("plan", "manifest", "envelope")
#: A child that takes longer is killed (a Pi 3 starts one in about 2 s). Well under half
#: the unit's WatchdogSec (120 s, pinged every 60 s from the event loop): a remote plan is
#: validated on the loop, and a hung child must not get the agent killed by systemd.
TIMEOUT_S = 30.0
#: The envelope's child, which runs before the plan's for the same message: both together
#: stay under half the watchdog (45 s).
ENVELOPE_TIMEOUT_S = 15.0
#: The answer to a 64 KiB message is far smaller; more is a broken child.
MAX_OUTPUT_BYTES = 1024 * 1024


class Refused(NetmonError):
    """The payload is invalid: ``problems`` has one ``key: why`` each."""

    exit_code = EXIT_INPUT

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ChildFailed(NetmonError):
    """The validation child itself failed (could not start, crashed, timed out)."""


def validate(kind: Kind, payload: bytes, links: Collection[str] = (),
             timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The validated ``payload`` (JSON bytes) of ``kind``, checked in a child process;
    a plan is also checked against ``links`` (the probe's link names). Raises
    :class:`Refused` (invalid) or :class:`ChildFailed`. The child's output is read into
    memory only up to :data:`MAX_OUTPUT_BYTES`."""
    # Files, not pipes: what the child prints is bounded before it is read.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        try:
            proc = subprocess.run([sys.executable, "-m", "agent.validate_child", kind, *links],
                                  input=payload, stdout=out_f, stderr=err_f,
                                  timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChildFailed(f"{kind} validation child: {exc}") from None
        out_f.seek(0)
        stdout = out_f.read(MAX_OUTPUT_BYTES + 1)
        err_f.seek(max(0, err_f.seek(0, os.SEEK_END) - 4096))
        stderr = err_f.read()
    if len(stdout) > MAX_OUTPUT_BYTES:
        raise ChildFailed(f"{kind} validation child printed more than {MAX_OUTPUT_BYTES} "
                          "bytes")
    try:
        out = json.loads(stdout)
    except ValueError:
        out = None
    if proc.returncode not in (0, EXIT_INPUT) or not isinstance(out, dict):
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ChildFailed(f"{kind} validation child exited {proc.returncode}: {tail[0]}")
    if not out.get("ok"):
        raise Refused([str(p) for p in out.get("problems") or ["invalid"]])
    value: dict[str, Any] = out["value"]
    return value


# --------------------------------------------------------------------------- the child


def plan_json(plan: Any) -> dict[str, Any]:
    """A validated :class:`netmon.plan.TestPlan` as the JSON
    :func:`agent.runconfig.plan_from_json` reads: each test's table, kind and options."""
    from agent.handoff import plain

    return {"budgets_mb": plain(plan.budgets_mb),
            "tests": {name: {"config": plain(spec.model_dump()), "kind": spec.kind,
                             "options": plain(spec.options.model_dump())}
                      for name, spec in plan.tests.items()}}


def _plan(payload: bytes, links: list[str]) -> dict[str, Any]:
    from netmon.plan import TestPlan

    plan = TestPlan.model_validate(json.loads(payload))
    problems = plan.problems(links)
    if problems:
        raise Refused(problems)
    return plan_json(plan)


def _manifest(payload: bytes) -> dict[str, Any]:
    from netmon.contract import ReleaseManifest

    value: dict[str, Any] = json.loads(
        ReleaseManifest.model_validate_json(payload).model_dump_json(by_alias=True))
    return value


def _envelope(payload: bytes) -> dict[str, Any]:
    from netmon.signing import SigningError, parse_envelope

    try:
        env, _raw = parse_envelope(payload)
    except SigningError as exc:
        # The caller decodes and looks for a signature first, as parse_envelope does, so
        # only the shape ("malformed") is left to refuse here; the detail is verify's own.
        raise Refused([exc.detail if exc.reason == "malformed"
                       else f"{exc.reason}: {exc.detail}"]) from None
    value: dict[str, Any] = json.loads(env.to_json())
    return value


def main(argv: list[str] | None = None) -> int:
    """The child: ``KIND [LINK...]``, the payload on stdin; prints ``{"ok": true,
    "value": ...}`` (exit 0) or ``{"ok": false, "problems": [...]}`` (exit 2)."""
    from pydantic import ValidationError

    from netmon.settings import describe_errors

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in KINDS:
        print("usage: python -m agent.validate_child plan|manifest|envelope [LINK...] "
              "< payload",
              file=sys.stderr)
        return EXIT_INPUT
    payload = sys.stdin.buffer.read()
    try:
        if args[0] == "plan":
            value = _plan(payload, args[1:])
        elif args[0] == "manifest":
            value = _manifest(payload)
        else:
            value = _envelope(payload)
    except ValidationError as exc:
        problems = [p.replace(": Value error, ", ": ") for p in describe_errors(exc)]
    except Refused as exc:
        problems = exc.problems
    except ValueError as exc:  # not JSON
        problems = [f"(payload): not JSON: {exc}"]
    else:
        print(json.dumps({"ok": True, "value": value}))
        return 0
    print(json.dumps({"ok": False, "problems": problems}))
    return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())

"""The contract's parts that need no pydantic: its constants, the MQTT topic names
(:class:`Topics`), :class:`ContractError` and :func:`now_utc`.

Split from :mod:`netmon.contract` (which re-exports every name here, so both sides keep
importing them from there) for the agent's run time, which runs without pydantic
(issue 20).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

SCHEMA_VERSION: Final = 1
DEFAULT_PREFIX = "netmon/v1"
MAX_MESSAGE_BYTES = 64 * 1024
#: Faster than any access link we could meet; anything above is a bug or a forgery.
MAX_SPEED_MBPS = 100_000.0

PROBE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,63}$"
_PROBE_ID_RE = re.compile(PROBE_ID_PATTERN)
LINK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"

#: Exit status with which the agent asks its service manager to start it again (after an
#: update switched versions, or a new version's health check failed): EX_TEMPFAIL.
EXIT_RESTART: Final = 75


def now_utc() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class ContractError(ValueError):
    """A message that breaks the contract. ``reason`` is a short stable code for counting
    and dead-letter files; ``detail`` is what a person reads."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Topics:
    """Topic names under a prefix (default ``netmon/v1``)."""

    prefix: str = DEFAULT_PREFIX

    def results(self, probe_id: str) -> str:
        """QoS 1, not retained."""
        return f"{self.prefix}/probes/{probe_id}/results"

    def status(self, probe_id: str) -> str:
        """QoS 1, retained; the last will sets it offline."""
        return f"{self.prefix}/probes/{probe_id}/status"

    def config(self, probe_id: str) -> str:
        """Retained, signed desired configuration written by the NOC."""
        return f"{self.prefix}/probes/{probe_id}/config"

    def receipts(self, probe_id: str) -> str:
        """QoS 1, not retained: written by the collector only, read by that probe only."""
        return f"{self.prefix}/probes/{probe_id}/receipts"

    def dead_letters(self) -> str:
        """Where the collector republishes messages it rejected."""
        return f"{self.prefix}/dead-letters"

    def enroll_request(self, request_id: str) -> str:
        """Retained, QoS 1: a blank probe's enrollment request (issue 18), written with the
        shared enrollment account, whose client id must be ``request_id``."""
        return f"{self.prefix}/enroll/{request_id}/request"

    def enroll_answer(self, request_id: str) -> str:
        """Retained, QoS 1: the NOC's signed answer to one enrollment request."""
        return f"{self.prefix}/enroll/{request_id}/answer"

    def all_enroll_requests(self) -> str:
        """Subscription filter for every pending enrollment request (NOC only)."""
        return f"{self.prefix}/enroll/+/request"

    def updates(self) -> str:
        """Retained, QoS 1: the signed agent release manifest (NOC writes, probes read)."""
        return f"{self.prefix}/updates"

    def all_results(self) -> str:
        """Subscription filter for every probe's results."""
        return f"{self.prefix}/probes/+/results"

    def all_status(self) -> str:
        """Subscription filter for every probe's status."""
        return f"{self.prefix}/probes/+/status"

    def parse(self, topic: str) -> tuple[str, str]:
        """Split a probe topic into ``(probe_id, kind)``; raise ContractError otherwise."""
        head = f"{self.prefix}/probes/"
        if not topic.startswith(head):
            raise ContractError("bad_topic", f"topic {topic!r} is not under {head!r}")
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not _PROBE_ID_RE.match(parts[0]):
            raise ContractError("bad_topic", f"topic {topic!r} is not <prefix>/probes/<id>/<kind>")
        return parts[0], parts[1]

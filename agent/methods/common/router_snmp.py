"""SNMP v2c reader of a router's IF-MIB 64-bit octet counters (``pysnmp``, the router
extra; imported only by :func:`agent.methods.common.router.source_for`)."""

from __future__ import annotations

import time
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    walk_cmd,
)

from agent.methods.common.router import Reading, RouterCounters, RouterError

IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"


class SnmpSource:
    """``ifHCInOctets`` / ``ifHCOutOctets`` of one interface of one router."""

    def __init__(self, cfg: RouterCounters) -> None:
        self.cfg = cfg
        self.engine = SnmpEngine()
        self.if_index = cfg.if_index

    async def _target(self) -> Any:
        return await UdpTransportTarget.create((self.cfg.host, self.cfg.port),
                                               timeout=self.cfg.timeout_s, retries=1)

    def _auth(self) -> CommunityData:
        # Read at every query: a corrected community file needs no restart.
        return CommunityData(self.cfg.read_community(), mpModel=1)

    async def _resolve(self) -> int:
        """The ifIndex whose ifName (else ifDescr) is ``if_name``."""
        want = self.cfg.if_name
        for column in (IF_NAME, IF_DESCR):
            async for err, status, _, binds in walk_cmd(
                    self.engine, self._auth(), await self._target(), ContextData(),
                    ObjectType(ObjectIdentity(column)), lexicographicMode=False):
                if err or status:
                    raise RouterError(f"snmp walk of {self.cfg.host}: {err or status}")
                for oid, value in binds:
                    if str(value) == want:
                        return int(oid.asTuple()[-1])
        raise RouterError(f"snmp: no interface named {want!r} on {self.cfg.host}")

    async def read(self) -> Reading:
        """One GET of both counters."""
        try:
            if self.if_index is None:
                self.if_index = await self._resolve()
            t0 = time.monotonic()
            err, status, index, binds = await get_cmd(
                self.engine, self._auth(), await self._target(), ContextData(),
                ObjectType(ObjectIdentity(f"{IF_HC_IN_OCTETS}.{self.if_index}")),
                ObjectType(ObjectIdentity(f"{IF_HC_OUT_OCTETS}.{self.if_index}")))
            at = (t0 + time.monotonic()) / 2
        except RouterError:
            raise
        except Exception as exc:  # pysnmp raises its own error types (and OSError)
            raise RouterError(f"snmp {self.cfg.host}: {type(exc).__name__}: {exc}") from exc
        if err or status:
            raise RouterError(f"snmp {self.cfg.host}: {err or status.prettyPrint()} "
                              f"(index {index})")
        try:
            rx, tx = (int(value) for _, value in binds)
        except (TypeError, ValueError) as exc:
            # noSuchInstance: the interface is gone or has no 64-bit counters
            raise RouterError(f"snmp {self.cfg.host}: ifIndex {self.if_index} has no "
                              f"ifHC octet counters ({exc})") from exc
        return Reading(rx, tx, at, 2**64)

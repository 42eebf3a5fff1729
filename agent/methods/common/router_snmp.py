"""SNMP v2c/v3 reader of a router's IF-MIB 64-bit octet counters (``pysnmp``, the router
extra; imported only by :func:`agent.methods.common.router.source_for`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    walk_cmd,
)

from agent.methods.common.router import Reading, RouterError

if TYPE_CHECKING:
    from agent.runconfig import Router

IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"

AUTH = {"md5": USM_AUTH_HMAC96_MD5, "sha": USM_AUTH_HMAC96_SHA,
        "sha224": USM_AUTH_HMAC128_SHA224, "sha256": USM_AUTH_HMAC192_SHA256,
        "sha384": USM_AUTH_HMAC256_SHA384, "sha512": USM_AUTH_HMAC384_SHA512}
PRIV = {"aes": USM_PRIV_CFB128_AES, "aes192": USM_PRIV_CFB192_AES,
        "aes256": USM_PRIV_CFB256_AES}


class SnmpSource:
    """``ifHCInOctets`` / ``ifHCOutOctets`` of one interface of one router."""

    def __init__(self, cfg: Router) -> None:
        self.cfg = cfg
        self.engine = SnmpEngine()
        self.if_index = cfg.if_index
        self._usm: tuple[tuple[str, str], UsmUserData] | None = None

    async def _target(self) -> Any:
        return await UdpTransportTarget.create((self.cfg.host, self.cfg.port),
                                               timeout=self.cfg.timeout_s, retries=1)

    def _auth(self) -> CommunityData | UsmUserData:
        # Secrets are read at every query: a corrected file needs no restart.
        if self.cfg.version == "2c":
            return CommunityData(self.cfg.read_community(), mpModel=1)
        try:
            keys = self.cfg.read_usm_keys()
        except ValueError as exc:
            raise RouterError(str(exc)) from exc
        # The user object is kept while the passphrases stay the same: turning a
        # passphrase into a key hashes a megabyte (RFC 3414), too much for every poll.
        if self._usm is None or self._usm[0] != keys:
            self._usm = (keys, UsmUserData(
                self.cfg.user or "", authKey=keys[0], privKey=keys[1],
                authProtocol=AUTH[self.cfg.auth_protocol],
                privProtocol=PRIV[self.cfg.priv_protocol]))
        return self._usm[1]

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

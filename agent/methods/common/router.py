"""The line's own byte counters, read at the office router (or the ISP's ONT).

A probe plugged into the office switch sees only its own traffic: the staff's downloads
on the shared fibre never cross its interface, so the busy-line deferral and the
cross-traffic figure read from the probe's counters (``linkstats``) miss them. A link with
a ``[links.<name>.router]`` table reads the router's WAN counters instead, over

* SNMP: IF-MIB ``ifHCInOctets`` / ``ifHCOutOctets`` (64-bit) of one interface, named by
  ``if_index`` or by ``if_name`` (matched against ``ifName``, then ``ifDescr``); v2c with
  a community, or v3 with a USM user, authentication and privacy (authPriv: the community
  of v2c crosses the office LAN in clear);
* UPnP IGD: ``GetTotalBytesReceived`` / ``GetTotalBytesSent`` of the
  ``WANCommonInterfaceConfig`` service (32-bit: wraps at 4 GiB, handled by :func:`delta`).

Both count the WAN interface's frames, so "received" is the line's download. The
protocol libraries (``pysnmp``, ``async-upnp-client``, the ``router`` extra) are imported
only when a link is configured with a source (``router_poll.source_for``): a probe
without one neither installs nor loads them. This module holds the configuration and the
types; ``router_poll`` reads and watches the counters.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent.runconfig import RouterSecrets

#: The Python modules each source needs (the ``router`` extra installs them).
NEEDS: dict[str, str] = {"snmp": "pysnmp", "upnp": "async_upnp_client"}


class RouterCounters(RouterSecrets, BaseModel):
    """``[links.<name>.router]``: where the line's real counters are read (its secrets by
    :class:`agent.runconfig.RouterSecrets`, shared with the run time's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["snmp", "upnp"] = Field(description="SNMP IF-MIB or UPnP IGD")
    # SNMP
    host: str | None = Field(None, min_length=1, max_length=253,
                             description="snmp: the router's address")
    port: int = Field(161, ge=1, le=65535, description="snmp: UDP port")
    community: SecretStr = Field(SecretStr("public"),
                                 description="snmp v2c community (prefer community_file)")
    community_file: Path | None = Field(None, description="snmp: file holding the community")
    version: Literal["2c", "3"] = Field(
        "2c", description='snmp: "2c" (community) or "3" (USM user, authPriv)')
    user: str | None = Field(None, min_length=1, max_length=32,
                             description="snmp v3: the USM user name")
    auth_protocol: Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"] = Field(
        "sha256", description="snmp v3: authentication protocol (HMAC)")
    auth_key_file: Path | None = Field(
        None, description="snmp v3: file holding the authentication passphrase (8+ chars)")
    priv_protocol: Literal["aes", "aes192", "aes256"] = Field(
        "aes", description="snmp v3: privacy protocol (AES-128 CFB, or 192/256)")
    priv_key_file: Path | None = Field(
        None, description="snmp v3: file holding the privacy passphrase (8+ chars)")
    if_index: int | None = Field(None, ge=1, le=2**31 - 1,
                                 description="snmp: ifIndex of the WAN interface")
    if_name: str | None = Field(None, min_length=1, max_length=64,
                                description="snmp: ifName (or ifDescr) of the WAN interface")
    # UPnP
    url: str | None = Field(None, min_length=1, max_length=500,
                            description="upnp: the IGD's description URL (rootDesc.xml)")
    timeout_s: float = Field(2.0, gt=0, le=30, description="one query's time limit")
    sample_s: float = Field(
        7.0, ge=1, le=120,
        description="busy-line check: watch the counters this long (longer than two of the "
                    "router's counter refreshes: snmpd refreshes every 3 s)")

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: object) -> object:
        # `version = 3` in TOML is as natural as `version = "3"`.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _complete(self) -> RouterCounters:
        v3_keys = ("user", "auth_key_file", "priv_key_file")
        if self.source == "snmp":
            if self.host is None:
                raise ValueError('host: required when source = "snmp"')
            if (self.if_index is None) == (self.if_name is None):
                raise ValueError('if_index: set exactly one of if_index or if_name for '
                                 'source = "snmp"')
            if self.url is not None:
                raise ValueError('url: only for source = "upnp"')
            if self.version == "3":
                for key in v3_keys:
                    if getattr(self, key) is None:
                        raise ValueError(f'{key}: required when version = "3" (SNMPv3 '
                                         "runs authPriv: a user, an authentication and a "
                                         "privacy passphrase file)")
                if self.community_file is not None:
                    raise ValueError('community_file: only for version = "2c"')
            else:
                for key in v3_keys:
                    if getattr(self, key) is not None:
                        raise ValueError(f'{key}: only for version = "3"')
        else:
            if self.url is None:
                raise ValueError('url: required when source = "upnp" (the IGD\'s '
                                 "description URL, e.g. http://192.168.1.1:5000/rootDesc.xml)")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: must be an http:// URL of the IGD's description")
            for key in ("host", "if_index", "if_name", "community_file", *v3_keys):
                if getattr(self, key) is not None:
                    raise ValueError(f'{key}: only for source = "snmp"')
        return self

    def problems(self, key: str) -> list[str]:
        """What stops this source from running on this machine (the extra not installed,
        an unreadable community file); ``key`` names the table in the messages."""
        out = []
        module = NEEDS[self.source]
        if importlib.util.find_spec(module) is None:
            out.append(f"{key}.source: {self.source} needs the '{module}' module: install "
                       "the agent with the router extra (pip install 'hatinh-netmon[agent,"
                       "router]')")
        if self.community_file is not None:
            try:
                self.read_community()
            except Exception as exc:  # SecretFileError names the file and why
                out.append(f"{key}.community_file: {exc}")
        if self.source == "snmp" and self.version == "3":
            try:
                self.read_usm_keys()
            except Exception as exc:  # names the file (key prefix "router.") and why
                out.append(f"{key}.{str(exc).removeprefix('router.')}")
        return out


@dataclass(frozen=True)
class Reading:
    """The router's counters for the line: bytes received (download) and sent."""

    rx_bytes: int
    tx_bytes: int
    at: float  # time.monotonic() when read
    modulus: int  # the counters wrap at this value
    #: The probe's own interface counters at the same moment (rx, tx), when watched: the
    #: line's bytes minus these are the other users' (``router_poll.Poller``).
    local: tuple[int, int] | None = None


def delta(start: int, end: int, modulus: int) -> int:
    """Bytes between two readings of a counter that wraps at ``modulus`` (one wrap at
    most: readings are seconds apart)."""
    return (end - start) % modulus


class RouterError(Exception):
    """A query to the router failed (the caller falls back to the probe's counters)."""


class CounterSource(Protocol):
    """One router's counters for one line."""

    async def read(self) -> Reading:
        """Query the router now; raises :class:`RouterError`."""
        ...

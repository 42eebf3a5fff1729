"""The MQTT plumbing shared by the agent, the collector and the NOC tools (paho-mqtt 2.x).

* :class:`BrokerSettings` — the broker keys both config files have (``[broker]`` of the
  agent, ``[mqtt]`` of the collector); each config subclasses it with its own defaults
  and extra keys, so both files keep their documented TOML keys.
The rest lives in :mod:`netmon.mqttclient` (no pydantic) and is re-exported here:

* :func:`tls_context` — the one TLS set-up: TLS 1.2 or newer, the server certificate
  verified against ``ca_file`` (or the system store) *and* its host name, an optional
  client certificate.
* :class:`ReconnectPolicy` — exponential backoff with jitter, either run by paho's own
  network loop (a long-lived subscriber) or by the owner (a fresh client per attempt).
* :func:`new_client` — a paho client (callback API v2) with the TLS context,
  credentials and reconnect policy applied.

Secrets (``password_file``) are read with :func:`netmon.settings.read_secret`, the rule
every secret file follows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from netmon.configfile import read_secret
from netmon.mqttclient import (
    TLS_MINIMUM_VERSION,
    BrokerLogin,
    ReconnectPolicy,
    new_client,
    tls_context,
)

__all__ = ["TLS_MINIMUM_VERSION", "BrokerLogin", "BrokerSettings", "ReconnectPolicy", "new_client",
           "tls_context"]


class BrokerSettings(BrokerLogin, BaseModel):
    """The broker connection keys common to the agent's ``[broker]`` and the collector's
    ``[mqtt]`` sections. Subclasses add ``client_id`` and their own keys and defaults."""

    model_config = ConfigDict(extra="forbid")
    #: The config section, for messages (``mqtt.password_file: ... empty``).
    section: ClassVar[str] = "mqtt"

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8883, ge=1, le=65535)
    tls: bool = Field(True, description="TLS with certificate and host name verification")
    ca_file: Path | None = Field(None, description="CA bundle (PEM); default: the system store")
    cert_file: Path | None = Field(None, description="client certificate (PEM)")
    key_file: Path | None = Field(None, description="client key (PEM), mode 0600")
    username: str | None = None
    password_file: Path | None = Field(None, description="file holding the password, mode 0600")
    keepalive_s: int = Field(60, ge=5, le=3600)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> BrokerSettings:
        # A key alone was silently ignored; a certificate alone may hold its key (one PEM).
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    def read_password(self) -> str | None:
        """The password from ``password_file`` (None without one); SecretFileError naming
        ``<section>.password_file`` when it cannot be used. Never logged."""
        return read_secret(self.password_file, f"{self.section}.password_file")

    def file_problems(self) -> list[str]:
        """``<section>.<key>: why`` for each named file that is missing or unreadable."""
        section = self.section
        out = []
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            path = getattr(self, key)
            if path is None:
                continue
            if not path.is_file():
                out.append(f"{section}.{key}: no such file {str(path)!r}")
            elif not os.access(path, os.R_OK):
                out.append(f"{section}.{key}: {str(path)!r} is not readable")
        if self.ca_file is not None and not self.tls:
            out.append(f"{section}.ca_file: set but tls = false")
        return out

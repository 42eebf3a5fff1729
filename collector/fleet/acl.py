"""The broker ACL that makes config topics writable by the NOC account only, and the
listeners that tie every probe's client id to its account.

:func:`mosquitto_acl` and :func:`mosquitto_listeners` are the reference: the mosquitto
role's ``netmon.acl.j2`` and the listener part of ``mosquitto.conf.j2`` must produce
exactly the same (``tests/deploy/test_ansible.py`` compares them); devstack's broker and
the tests' (``tests/helpers/fleet.py``) use them directly. ``docs/fleet.md`` explains each
ACL line, ``docs/security.md`` the listeners.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netmon.contract import DEFAULT_PREFIX

#: A probe id, and so a probe's MQTT username (the Ansible role asserts it). Service
#: accounts and service client ids contain a character outside it ("_"), so that no
#: probe account can ever be, or connect as, one of them.
PROBE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")


def probe_shaped(name: str) -> bool:
    """True if ``name`` could be a probe's username (and so a probe's client id)."""
    return PROBE_ID_RE.match(name) is not None


@dataclass(frozen=True)
class Listener:
    """One mosquitto listener: where it listens and whom it lets in."""

    port: int
    bind_address: str = ""
    password_file: str = ""
    acl_file: str = ""
    #: Replace each client's id by its username (mosquitto ``use_username_as_clientid``).
    username_as_clientid: bool = False
    #: ``(cafile, certfile, keyfile, tls_version)``, or None for plain MQTT (tests only).
    tls: tuple[str, str, str, str] | None = None


def mosquitto_listeners(probes: Listener, services: Listener,
                        enrollment: Listener | None = None) -> str:
    """The authentication part of ``mosquitto.conf``: ``per_listener_settings true``, the
    probes' listener (client id = username, so a probe cannot take another account's
    session) and the service listener (collector and NOC pick their own ids; its password
    file holds only service accounts, so no probe credential works on it).

    ``enrollment`` (issue 18): a third listener whose password file holds only the shared
    enrollment account and whose ACL is :func:`enrollment_acl`: a blank probe picks its
    request id as client id, and that id is the only topic level it may use."""
    out = ["# Sessions (docs/security.md): on the probes' listener a client's id is its",
           "# username, so no probe can take another account's session; the collector and",
           "# the NOC log in on the service listener, whose password file has no probe.",
           "per_listener_settings true"]
    listeners = [("probes", probes), ("services", services)]
    if enrollment is not None:
        listeners.append(("enrollment", enrollment))
    for role, lst in listeners:
        out += ["", f"# {role}",
                f"listener {lst.port}{(' ' + lst.bind_address) if lst.bind_address else ''}",
                "protocol mqtt", "allow_anonymous false", "allow_zero_length_clientid false"]
        if lst.password_file:
            out.append(f"password_file {lst.password_file}")
        if lst.acl_file:
            out.append(f"acl_file {lst.acl_file}")
        out.append(f"use_username_as_clientid {'true' if lst.username_as_clientid else 'false'}")
        if lst.tls is not None:
            cafile, certfile, keyfile, version = lst.tls
            out += [f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}",
                    f"tls_version {version}", "require_certificate false"]
    return "\n".join(out) + "\n"


def mosquitto_acl(prefix: str = DEFAULT_PREFIX, noc_user: str = "noc",
                  collector_user: str = "collector") -> str:
    """A mosquitto ``acl_file``: only ``noc_user`` writes config topics and enrollment
    answers (and reads and clears enrollment requests), only ``collector_user`` writes
    receipts; each probe (its username is its probe id) publishes its own results and
    status and reads only its own config and receipts, and the release manifest that only
    ``noc_user`` writes."""
    return (
        "# hatinh-netmon broker ACL (docs/fleet.md). Probes log in with their probe id.\n"
        f"user {noc_user}\n"
        f"topic readwrite {prefix}/probes/+/config\n"
        f"topic read {prefix}/probes/+/status\n"
        f"topic read {prefix}/dead-letters\n"
        f"topic readwrite {prefix}/enroll/+/request\n"
        f"topic readwrite {prefix}/enroll/+/answer\n"
        f"topic readwrite {prefix}/updates\n"
        "\n"
        f"user {collector_user}\n"
        f"topic read {prefix}/probes/+/results\n"
        f"topic read {prefix}/probes/+/status\n"
        f"topic write {prefix}/dead-letters\n"
        f"topic write {prefix}/probes/+/receipts\n"
        "\n"
        "# Applies to every account; %u is the username, i.e. the probe id.\n"
        f"pattern write {prefix}/probes/%u/results\n"
        f"pattern write {prefix}/probes/%u/status\n"
        f"pattern read {prefix}/probes/%u/config\n"
        f"pattern read {prefix}/probes/%u/receipts\n"
        "# The signed agent release manifest (docs/fleet.md, \"Agent updates\").\n"
        f"pattern read {prefix}/updates\n"
    )


def enrollment_acl(prefix: str = DEFAULT_PREFIX) -> str:
    """The enrollment listener's ``acl_file`` (its password file holds only the shared
    enrollment account): a client may write the request and read the answer named by its
    own client id (its random request id), and nothing else: no results, no status, no
    other request's answer, no wildcard."""
    return (
        "# hatinh-netmon enrollment listener ACL (docs/fleet.md, \"Enrollment\").\n"
        "# %c is the client id, which a blank probe sets to its random request id.\n"
        f"pattern write {prefix}/enroll/%c/request\n"
        f"pattern read {prefix}/enroll/%c/answer\n"
    )

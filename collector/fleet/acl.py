"""The broker ACL that makes config topics writable by the NOC account only.

:func:`mosquitto_acl` is the reference: the mosquitto role's ``netmon.acl.j2`` must grant
exactly the same (``tests/deploy/test_ansible.py`` compares them); ``docs/fleet.md``
explains each line.
"""

from __future__ import annotations

from netmon.contract import DEFAULT_PREFIX


def mosquitto_acl(prefix: str = DEFAULT_PREFIX, noc_user: str = "noc",
                  collector_user: str = "collector") -> str:
    """A mosquitto ``acl_file``: only ``noc_user`` writes config topics and only
    ``collector_user`` writes receipts; each probe (its username is its probe id)
    publishes its own results and status and reads only its own config and receipts."""
    return (
        "# hatinh-netmon broker ACL (docs/fleet.md). Probes log in with their probe id.\n"
        f"user {noc_user}\n"
        f"topic readwrite {prefix}/probes/+/config\n"
        f"topic read {prefix}/probes/+/status\n"
        f"topic read {prefix}/dead-letters\n"
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
    )

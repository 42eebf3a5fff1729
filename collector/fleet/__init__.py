"""Fleet control for the NOC, one module per job:

* :mod:`collector.fleet.acl` — the broker ACL (config topics writable by the NOC only);
* :mod:`collector.fleet.noc_client` — the NOC's short-lived MQTT v5 client;
* :mod:`collector.fleet.push` — plans: load, sign and push; show a retained config;
* :mod:`collector.fleet.inventory` — the probe inventory for ``probes list``;
* :mod:`collector.fleet.errors` — :class:`~collector.fleet.errors.FleetError`.

Nothing is imported here: ``probes list`` needs neither paho nor cryptography.
"""

"""No account can take another's session or client id (issue 15).

A real mosquitto with the deployed shape (:func:`collector.fleet.acl.mosquitto_listeners`:
the probes' listener replaces each client id by the username, the service listener has
only service accounts; the ACL of :func:`collector.fleet.acl.mosquitto_acl`). A probe
account, as someone holding a stolen probe's credentials would, tries the collector's
client id, another probe's client id and wildcard subscriptions. The collector keeps a
persistent session throughout, and every result queued for it while it is away arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.fleet.acl import probe_shaped
from devstack import services
from netmon.contract import Topics
from tests.helpers.fleet import Client, start_acl_broker

T = Topics("netmon/v1")
ATTACKER, VICTIM = "ky-anh-01", "cam-xuyen-02"
USERS = {"noc": "noc-pw", "collector": "coll-pw", ATTACKER: "attacker-pw",
         VICTIM: "victim-pw"}
COLLECTOR_ID = "netmon_collector-1"  # the collector's default form: "_" keeps probes out
QUEUED = 5
NOT_AUTHORIZED = 135  # MQTT v5 CONNACK / PUBACK reason code; below 128 is success


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[services.Service]:
    svc = start_acl_broker(tmp_path / "broker", USERS)
    yield svc
    svc.stop()


def _service_port(broker: services.Service) -> int:
    return int(str(broker.extra["service_port"]))


def _collector(broker: services.Service) -> Client:
    c = Client(broker, "collector", USERS["collector"], client_id=COLLECTOR_ID,
               persistent=True, port=_service_port(broker))
    assert c.connect_rc is not None and not c.connect_rc.is_failure, c.connect_rc
    return c


def _publish_results(broker: services.Service, probe: str, n: int) -> list[bytes]:
    pub = Client(broker, probe, USERS[probe])
    payloads = [f"{probe}-{i}".encode() for i in range(n)]
    try:
        for p in payloads:
            assert pub.publish(T.results(probe), p, retain=False).value < 128
    finally:
        pub.close()
    return payloads


def _disconnected(c: Client) -> bool:
    return not c.c.is_connected()


def test_the_collector_s_client_id_cannot_be_a_probe_s() -> None:
    """Service ids carry a character no probe id has (the role asserts probe ids)."""
    assert not probe_shaped(COLLECTOR_ID)
    assert probe_shaped(ATTACKER) and probe_shaped(VICTIM)


def test_probe_cannot_take_the_collector_s_session(broker: services.Service) -> None:
    collector = _collector(broker)
    collector.subscribe(T.all_results())
    collector.close()  # away (a restart): the broker queues for its persistent session
    queued = _publish_results(broker, VICTIM, QUEUED)

    # The attacker asks for the collector's id with clean start off, on both listeners.
    on_probes = Client(broker, ATTACKER, USERS[ATTACKER], client_id=COLLECTOR_ID,
                       persistent=True)
    assert on_probes.connect_rc is not None and not on_probes.connect_rc.is_failure
    on_probes.subscribe(T.all_results())  # what a taken-over session would deliver
    on_service = Client(broker, ATTACKER, USERS[ATTACKER], client_id=COLLECTOR_ID,
                        persistent=True, port=_service_port(broker))
    assert on_service.connect_rc is not None and on_service.connect_rc.value == NOT_AUTHORIZED

    # The collector comes back: its session is there, with every queued result.
    collector = _collector(broker)
    try:
        assert collector.wait(lambda: len(collector.messages) >= QUEUED, 30), \
            f"{len(collector.messages)} of {QUEUED} queued results survived"
        assert sorted(collector.payloads(T.results(VICTIM))) == sorted(queued)
        assert not on_probes.payloads(T.results(VICTIM))
        # And the attacker's connection did not kick the collector off.
        more = _publish_results(broker, VICTIM, 1)
        assert collector.wait(lambda: more[0] in collector.payloads(T.results(VICTIM)), 30)
        assert collector.c.is_connected()
    finally:
        for c in (collector, on_probes, on_service):
            c.close()


def test_probe_cannot_take_another_probe_s_session(broker: services.Service) -> None:
    victim = Client(broker, VICTIM, USERS[VICTIM], client_id=VICTIM, persistent=True)
    victim.subscribe(T.receipts(VICTIM))
    victim.subscribe(T.config(VICTIM))
    attacker = Client(broker, ATTACKER, USERS[ATTACKER], client_id=VICTIM, persistent=True)
    noc = Client(broker, "noc", USERS["noc"], port=_service_port(broker))
    try:
        assert attacker.connect_rc is not None and not attacker.connect_rc.is_failure
        attacker.subscribe(T.config(VICTIM))
        # The victim keeps its connection (same id would have kicked it) and its traffic.
        assert noc.publish(T.config(VICTIM), b"plan-for-victim").value < 128
        assert victim.wait(lambda: b"plan-for-victim" in victim.payloads(T.config(VICTIM)), 30)
        assert victim.c.is_connected()
        assert not attacker.payloads(T.config(VICTIM))
        # The attacker's id really is its username: the ACL's %u gives it its own topics.
        assert attacker.publish(T.status(ATTACKER), b"own", retain=False).value < 128
        assert attacker.publish(T.status(VICTIM), b"forged", retain=False).value \
            == NOT_AUTHORIZED
    finally:
        for c in (victim, attacker, noc):
            c.close()


@pytest.mark.parametrize("topic", ["#", T.all_results(), "netmon/v1/probes/+/config",
                                   "netmon/v1/probes/+/receipts", "$SYS/#"])
def test_wildcard_subscriptions_read_nothing(broker: services.Service, topic: str) -> None:
    attacker = Client(broker, ATTACKER, USERS[ATTACKER])
    noc = Client(broker, "noc", USERS["noc"], port=_service_port(broker))
    collector = _collector(broker)
    try:
        attacker.subscribe(topic)
        collector.subscribe(T.all_results())
        assert noc.publish(T.config(VICTIM), b"victim-plan").value < 128
        assert collector.publish(T.receipts(VICTIM), b"victim-receipt",
                                 retain=False).value < 128
        sent = _publish_results(broker, VICTIM, 3)
        # The collector receives them all: by then the broker has routed each message.
        assert collector.wait(lambda: set(sent) <= set(collector.payloads(T.results(VICTIM))),
                              30)
        with attacker.cond:
            leaked = [(m.topic, bytes(m.payload)) for m in attacker.messages
                      if VICTIM in m.topic or m.topic.startswith("$SYS")]
        assert not leaked
    finally:
        for c in (attacker, noc, collector):
            c.close()

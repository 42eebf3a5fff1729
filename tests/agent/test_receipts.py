"""End-to-end receipts, agent side, against a real mosquitto and the real agent process:
a subscriber plays the collector (it receives the results and publishes receipts when the
test says so). The real collector and InfluxDB are in ``test_receipts_collector.py``."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from agent.spool import Spool
from devstack.services import Service
from netmon.contract import ReceiptMessage, parse_status
from tests.helpers.agent import (
    Listener,
    Subscriber,
    agent_config,
    cli,
    fresh_state,
    kill,
    spool_ids,
    spool_sent_ids,
    spool_unsent_ids,
    start_agent,
    tcp_test,
    wait_until,
    write_config,
)

PROBE = "test-probe-01"
TOPICS = f"netmon/v1/probes/{PROBE}/#"


def test_result_deleted_only_by_its_receipt(tmp_path: Path, broker: Service,
                                            target: Listener) -> None:
    # Write-behind at 1 s: unreceipted rows reach the file, marked sent, within a second.
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 3600, "write_delay_s": 1.0})
    cfg = write_config(tmp_path, data)
    spool = tmp_path / "state" / "spool.db"
    log = tmp_path / "agent.log"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, log)
    try:
        collector.wait(lambda: len(collector.results()) >= 4, 30, "4 results")
        ids = [r["id"] for r in collector.results()][:4]
        # Acknowledged by the broker, received by "the collector": still spooled, sent.
        wait_until(lambda: set(ids) <= set(spool_sent_ids(spool)), 20, "rows marked sent")
        collector.wait(lambda: any((json.loads(m.payload).get("awaiting_receipt") or 0) >= 4
                                   for m in collector.statuses()), 30,
                       "a status with awaiting_receipt >= 4")

        collector.receipt(PROBE, ids[:2])
        wait_until(lambda: not set(ids[:2]) & set(spool_ids(spool)), 20,
                   "the receipted rows deleted")
        assert set(ids[2:]) <= set(spool_sent_ids(spool))

        # Receipts that break the contract, or speak for another probe, delete nothing.
        collector.receipt(PROBE, [], payload=b"{not json")
        other = ReceiptMessage(probe_id="other-probe-99", ids=(uuid.UUID(ids[2]),)).to_json()
        collector.receipt(PROBE, [], payload=other)
        collector.receipt(PROBE, [ids[3]])  # handled after the two bad ones (same session)
        wait_until(lambda: ids[3] not in spool_ids(spool), 20, "the valid receipt applied")
        assert ids[2] in spool_sent_ids(spool)
        assert "ignored a receipt that breaks the contract: not_json" in log.read_text()

        def counters() -> dict[str, int]:
            broker_info: dict[str, int] = fresh_state(
                tmp_path / "state" / "agent-state.json").get("broker") or {}
            return broker_info
        # Both refused (the second warning is rate-limited, the counter is not).
        wait_until(lambda: counters().get("bad_receipts") == 2 and
                   counters().get("receipts") == 2, 20, "receipt counters in the state file")
    finally:
        kill(agent)
        collector.close()


def test_unreceipted_results_are_sent_again_after_the_timeout(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    timeout_s = 2.0
    data = agent_config(tmp_path, broker,
                        {"a": tcp_test(target.port), "b": tcp_test(target.port)},
                        spool={"receipt_timeout_s": timeout_s, "write_delay_s": 1.0})
    cfg = write_config(tmp_path, data)
    log = tmp_path / "agent.log"
    spool = tmp_path / "state" / "spool.db"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, log)
    try:
        collector.wait(lambda: any(len(t) >= 2 for t in collector.deliveries().values()),
                       60, "a result published a second time")
        first_id, times = next((i, t) for i, t in collector.deliveries().items()
                               if len(t) >= 2)
        # Not before the timeout (PUBACK comes after the first arrival, so the gap at the
        # subscriber is at least the timeout minus a little scheduling slack).
        assert times[1] - times[0] >= timeout_s - 0.5, times

        collector.receipt(PROBE, [first_id])
        receipted_at = time.monotonic()
        wait_until(lambda: first_id not in spool_ids(spool), 20, "receipt applied")
        # A result first delivered after the receipt was sent, then published again: by
        # then ``first_id`` (older, its last send earlier) would have been due as well.
        def later_resent() -> bool:
            return any(t[0] > receipted_at and len(t) >= 2
                       for t in collector.deliveries().values())
        collector.wait(later_resent, 60, "a newer result resent after the receipt")
        assert all(t <= receipted_at for t in collector.deliveries()[first_id]), \
            "a receipted result was published again"
        assert spool_sent_ids(spool), "unreceipted results stay spooled"
    finally:
        kill(agent)
        collector.close()


def test_resend_rounds_are_bounded_oldest_first(tmp_path: Path, broker: Service,
                                               target: Listener) -> None:
    data = agent_config(tmp_path, broker,
                        {"a": tcp_test(target.port), "b": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 2.0, "resend_batch": 3})
    cfg = write_config(tmp_path, data)
    log = tmp_path / "agent.log"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, log)
    try:
        # Two results a second become overdue; a round takes at most 3 of them.
        def rounds() -> list[int]:
            return [int(n) for n in re.findall(r"for (\d+) result\(s\): publishing them "
                                               r"again", log.read_text())]
        wait_until(lambda: rounds().count(3) >= 3, 90, "three full resend rounds")
        assert max(rounds()) == 3
        # Oldest first: the first resent results are the first ones measured.
        order = [r["id"] for r in collector.results()]
        first_seen: dict[str, int] = {}
        resent: list[str] = []
        for n, rid in enumerate(order):
            if rid in first_seen:
                resent.append(rid)
            else:
                first_seen[rid] = n
        firsts = sorted(first_seen, key=first_seen.__getitem__)
        assert resent[:3] == firsts[:3], (resent[:3], firsts[:3])
    finally:
        kill(agent)
        collector.close()


def test_receipts_off_deletes_on_puback(tmp_path: Path, broker: Service,
                                        target: Listener) -> None:
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipts": False})
    cfg = write_config(tmp_path, data)
    spool = tmp_path / "state" / "spool.db"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    # A receipt subscriber sees whether the agent subscribes: it must not.
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        collector.wait(lambda: len(collector.results()) >= 3, 30, "3 results")
        ids = [r["id"] for r in collector.results()][:3]
        wait_until(lambda: not set(ids) & set(spool_ids(spool)), 20, "deleted on PUBACK")
        assert spool_sent_ids(spool) == []
        collector.wait(lambda: any(json.loads(m.payload).get("state") == "online"
                                   for m in collector.statuses()), 20, "a status")
        status = parse_status(collector.statuses()[-1].payload, PROBE)
        assert status.awaiting_receipt is None and status.spool_lost == 0
    finally:
        kill(agent)
        collector.close()


def test_a_result_receipted_promptly_is_never_marked_sent(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    # Issue 20 (SD-card writes): the service records PUBACKs RECEIPT_ACK_DELAY_S (5 s)
    # late, so a result whose receipt comes first, as the collector's usually does, is
    # deleted without a "mark sent" transaction. The subscriber plays the collector and
    # receipts each result half a second after it arrives; a row marked sent meanwhile
    # (PUBACKs recorded after 50 ms, as before) would show in the spool for that long.
    # Without write-behind (write_delay_s = 0): every result is on disk before it goes.
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 3600, "write_delay_s": 0})
    cfg = write_config(tmp_path, data)
    spool = tmp_path / "state" / "spool.db"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, tmp_path / "agent.log")
    receipted: list[str] = []
    seen_sent: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while len(receipted) < 6:
            assert time.monotonic() < deadline, f"only {len(receipted)} results receipted"
            seen_sent.update(spool_sent_ids(spool))
            due = [m for m in collector.deliveries().items()
                   if m[0] not in receipted and time.monotonic() - m[1][0] >= 0.5]
            if due:
                ids = [rid for rid, _ in due]
                collector.receipt(PROBE, ids)
                receipted += ids
            time.sleep(0.02)
        wait_until(lambda: not set(receipted) & set(spool_ids(spool)), 30,
                   "the receipted rows deleted")
        seen_sent.update(spool_sent_ids(spool))
    finally:
        kill(agent)
        collector.close()
    assert not seen_sent & set(receipted), "receipted results were marked sent first"
    # Still counted as acknowledged by the broker (with the deletes of their receipt).
    with Spool(spool, readonly=True) as ro:
        stats = ro.stats()
    assert stats.receipted >= len(receipted)
    assert stats.acked >= len(receipted)


def test_write_behind_unreceipted_results_committed_survive_sigkill_loss_reported(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    """Issue 20: a result no receipt names within ``write_delay_s`` is committed (marked
    sent) and survives kill -9; the restarted agent reports the unclean stop with a bound
    on what may be lost, never silently."""
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 3600, "write_delay_s": 1.0})
    cfg = write_config(tmp_path, data)
    spool = tmp_path / "state" / "spool.db"
    collector = Subscriber(broker.host, broker.port, TOPICS)  # never sends a receipt
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        wait_until(lambda: len(spool_sent_ids(spool)) >= 3, 30,
                   "unreceipted results committed after the delay")
        kill(agent)  # SIGKILL
        kept = spool_ids(spool)
        assert len(kept) >= 3
        wire = {r["id"] for r in collector.results()}
        # Results published but held (younger than the delay) when it died are lost:
        # the documented trade-off, bounded by what the restart reports.
        lost = wire - set(kept)
        assert Path(f"{spool}.open").exists()
        log2 = tmp_path / "agent2.log"
        agent = start_agent(cfg, log2)
        wait_until(lambda: "did not stop cleanly" in log2.read_text(), 30,
                   "the unclean stop logged")
        bound = int(re.search(r"up to (\d+) result\(s\) held in memory",
                              log2.read_text()).group(1))  # type: ignore[union-attr]
        assert len(lost) <= bound
        res = cli("status", "--config", str(cfg), "--json")
        shown = json.loads(res.stdout)["unclean_stop"]
        assert shown is not None and shown["results_maybe_lost"] == bound
        # ... and the NOC hears it: the status message carries the same bound.
        collector.wait(lambda: any(
            parse_status(m.payload).results_maybe_lost == bound for m in collector.statuses()),
            30, "the bound in the probe's status message")
        assert "did not stop cleanly" in cli("status", "--config", str(cfg)).stdout
        assert set(kept) <= set(spool_ids(spool)) | {r["id"] for r in collector.results()}
    finally:
        kill(agent)
        collector.close()


def test_write_behind_broker_outage_commits_at_once_nothing_lost(
        tmp_path: Path, broker: Service, target: Listener) -> None:
    """Issue 20: when the connection ends, what is held is committed at once and new
    results go straight to the file (no receipt can come), whatever the write delay."""
    data = agent_config(tmp_path, broker, {"t": tcp_test(target.port)},
                        spool={"receipt_timeout_s": 3600, "write_delay_s": 3600})
    cfg = write_config(tmp_path, data)
    spool = tmp_path / "state" / "spool.db"
    collector = Subscriber(broker.host, broker.port, TOPICS)
    agent = start_agent(cfg, tmp_path / "agent.log")
    try:
        collector.wait(lambda: len(collector.results()) >= 3, 30, "3 results")
        assert spool_ids(spool) == []  # held: the delay is an hour
        broker.stop()
        collector.close()
        seen = {r["id"] for r in collector.results()}
        wait_until(lambda: seen <= set(spool_ids(spool)), 30,
                   "the held results committed when the connection ended")
        wait_until(lambda: len(spool_unsent_ids(spool)) >= 3, 30,
                   "results measured in the outage committed at once")
        kill(agent)  # SIGKILL: nothing measured is lost
        kept = set(spool_ids(spool))
        assert seen <= kept and len(kept) >= len(seen) + 3
    finally:
        kill(agent)
        collector.close()

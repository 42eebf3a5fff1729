"""The bulletin reads its raw tests as MessagePack answers now (issue 20): the files it
writes must be the same as with the JSON answers it read before, on the same data; and
the same with Python's cyclic garbage collector paused over its stages as with it running."""

from __future__ import annotations

import contextlib
import gc
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import config as config_mod
from collector.bulletin import compute, gcpause
from collector.bulletin import generate as generate_mod
from collector.bulletin import pdf as pdf_mod
from collector.bulletin.generate import generate
from collector.config import InfluxSettings
from collector.core import influx as influx_mod
from collector.core.influx import InfluxClient
from devstack import services
from tests.helpers import bulletin as hb


@pytest.fixture(scope="module")
def url(influxd_module: services.Service) -> str:
    """One influxd for the module with the October data set published into it."""
    url = f"http://{influxd_module.host}:{influxd_module.port}"
    ds = hb.october_data_set()
    assert hb.publish(ds, url) == len(ds.messages)
    return url


def _reading(mp: pytest.MonkeyPatch, as_json: bool) -> list[bool]:
    """Patch the client so every query is answered in JSON (the previous way of reading)
    or as asked (the product); returns the ``binary`` flags the bulletin asked with."""
    asked: list[bool] = []
    original = InfluxClient.query

    def query(self: InfluxClient, q: str, params: dict[str, Any] | None = None, *,
              compressed: bool = True, binary: bool = False) -> list[Any]:
        asked.append(binary)
        return original(self, q, params, compressed=compressed,
                        binary=binary and not as_json)

    mp.setattr(InfluxClient, "query", query)
    return asked


def _pdftext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          check=True, timeout=60).stdout.decode("utf-8")


def _bulletin(url: str, tmp: Path) -> dict[str, bytes | str]:
    tmp.mkdir(parents=True)
    cfg = config_mod.load(hb.write_config(tmp / "collector.toml", url))
    res = generate(cfg, "2026-10", tmp / "out", now=datetime(2026, 11, 2, 8, 0, tzinfo=UTC))
    assert res.has_data
    return {"csv": res.files["csv"].read_bytes(), "html": res.files["html"].read_bytes(),
            "pdf_text": _pdftext(res.files["pdf"])}


def test_influxd_answers_msgpack_with_the_same_content(url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    q = ('SELECT "download_mbps", "cross_traffic", "result_id" FROM "results" '
         'GROUP BY "probe", "status" LIMIT 50')
    form = {"q": q, "db": "netmon", "epoch": "ms"}
    resp = httpx.post(f"{url}/query", data=form,
                      headers={"Accept": "application/x-msgpack"})
    assert resp.headers["content-type"].startswith("application/x-msgpack")
    decoded: list[int] = []
    unpackb = influx_mod.msgpack.unpackb
    monkeypatch.setattr(influx_mod.msgpack, "unpackb",
                        lambda data, **kw: decoded.append(len(data)) or unpackb(data, **kw))
    with InfluxClient(InfluxSettings(url=url, database="netmon")) as client:
        as_json = client.query(q)
        assert not decoded
        as_msgpack = client.query(q, binary=True)
    assert decoded, "the client did not get a MessagePack answer"
    assert as_json and as_json[0]
    assert as_msgpack == as_json


def test_same_csv_html_and_pdf_as_with_json_answers(url: str, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        asked = _reading(mp, as_json=True)
        before = _bulletin(url, tmp_path / "json")
    with pytest.MonkeyPatch.context() as mp:
        asked = _reading(mp, as_json=False)
        after = _bulletin(url, tmp_path / "msgpack")
    assert any(asked), "the bulletin no longer asks for MessagePack: this test is moot"
    for key in ("csv", "html", "pdf_text"):
        assert after[key] == before[key], key


def test_gc_paused_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gcpause.gc_paused():
        assert not gc.isenabled()
        with gcpause.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "a nested pause turned the collector back on"
        raise RuntimeError("a stage failed")
    assert gc.isenabled(), "the collector stayed off after a failed stage"
    gc.disable()
    try:
        with gcpause.gc_paused():
            pass
        assert not gc.isenabled(), "a pause turned on a collector its caller had turned off"
    finally:
        gc.enable()


def test_collector_paused_in_every_stage_and_same_files_as_with_it(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: the cyclic garbage collector is off while the bulletin fetches, computes
    and renders its PDF (a third of WeasyPrint's CPU time went to it), and the files are
    the same as with it running all along."""
    import weasyprint

    seen: dict[str, bool] = {}
    real_query, real_build = InfluxClient.query, compute.build_report
    real_write_pdf = weasyprint.HTML.write_pdf

    def query(self: InfluxClient, *a: Any, **kw: Any) -> list[Any]:
        seen["fetch"] = seen.get("fetch", False) or gc.isenabled()
        return real_query(self, *a, **kw)

    def build_report(*a: Any, **kw: Any) -> compute.Report:
        seen["compute"] = gc.isenabled()
        return real_build(*a, **kw)

    def write_pdf(self: Any, *a: Any, **kw: Any) -> Any:
        seen["pdf"] = gc.isenabled()
        return real_write_pdf(self, *a, **kw)

    monkeypatch.setattr(InfluxClient, "query", query)
    monkeypatch.setattr(compute, "build_report", build_report)
    monkeypatch.setattr(weasyprint.HTML, "write_pdf", write_pdf)
    paused = _bulletin(url, tmp_path / "paused")
    assert seen == {"fetch": False, "compute": False, "pdf": False}, \
        f"the collector ran during a stage: {seen}"
    assert gc.isenabled(), "the bulletin left the collector off"
    # The previous behaviour: the collector on throughout.
    monkeypatch.setattr(gcpause, "gc_paused", contextlib.nullcontext)
    monkeypatch.setattr(generate_mod, "gc_paused", contextlib.nullcontext)
    monkeypatch.setattr(pdf_mod, "gc_paused", contextlib.nullcontext)
    seen.clear()
    running = _bulletin(url, tmp_path / "running")
    assert seen == {"fetch": True, "compute": True, "pdf": True}, seen
    for key in ("csv", "html", "pdf_text"):
        assert paused[key] == running[key], key

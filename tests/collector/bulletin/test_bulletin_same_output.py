"""The bulletin reads its raw tests as MessagePack answers now (issue 20): the files it
writes must be the same as with the JSON answers it read before, on the same data."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import config as config_mod
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

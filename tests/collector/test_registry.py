"""The site registry on the official map (issue 16) and a result identity that holds
(issue 14): sites keyed on GSO codes checked against the reference data, dated entries,
and the same result always becoming the same point. In-process, no services."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from collector import config as collector_config
from collector.core.ingest import validate
from collector.core.registry import Registry, RegistryError, load_sites, load_table
from collector.core.schema import RESERVED_METRIC_NAMES, RESULT_TAGS, identity_offset_ns
from collector.core.units import DEFAULT_FILE, UnitsError, load_units
from netmon.contract import Topics
from netmon.settings import ConfigError
from tests.helpers import REPO
from tests.helpers.collector import SITES, make_result, sites_toml

T = Topics()
SHARED = REPO.parent / "shared" / "data" / "ha-tinh-communes-2025.csv"


def _entry(**kw: object) -> str:
    row = {"probe_id": "p-test-01", "name": "UBND", "latitude": 18.0, "longitude": 106.0,
           "site_type": "commune_office"} | kw
    return "[[site]]\n" + "".join(
        f"{k} = {v!r}\n".replace("'", '"') if not isinstance(v, date) else f"{k} = {v}\n"
        for k, v in row.items())


def _problems(tmp_path: Path, text: str) -> str:
    p = tmp_path / "sites.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(RegistryError) as err:
        load_sites(p)
    return "\n".join(err.value.problems)


# --------------------------------------------------------------------------- reference data


def test_reference_data_is_the_2025_map() -> None:
    units = load_units()
    assert len(units.units) == 69
    assert sum(u.is_ward for u in units.units.values()) == 9
    assert units.effective == date(2025, 7, 1)
    # every (new, old) row of the published file is there, with its share
    with open(DEFAULT_FILE, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(u.predecessors) for u in units.units.values()) == 213
    split = {code for code, targets in units.successors.items() if len(targets) > 1}
    assert {units.old_units[c].name for c in split} == {"Phường Đại Nài", "Xã Kỳ Lợi"}


def test_packaged_reference_data_is_the_published_file() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} (the published reference file) is not on this machine")
    assert DEFAULT_FILE.read_bytes() == SHARED.read_bytes()


def test_reference_data_can_be_replaced_without_code(tmp_path: Path) -> None:
    nxt = tmp_path / "next-map.csv"
    nxt.write_text("new_code,new_name,old_code,old_name,old_district_code,old_district,share\n"
                   "99001,Xã Mới,18754,Phường Sông Trí,000,(none),full\n", encoding="utf-8")
    units = load_units(nxt, date(2030, 1, 1))
    reg = tmp_path / "sites.toml"
    reg.write_text(_entry(commune_code="99001"), encoding="utf-8")
    site = load_sites(reg, units)["p-test-01"]
    assert (site.commune_code, site.commune) == ("99001", "Xã Mới")
    bad = tmp_path / "bad.csv"
    bad.write_text("new_code,new_name,old_code,old_name,old_district_code,old_district,share\n"
                   "9901,Xã Mới,18754,Phường Sông Trí,000,(none),full\n", encoding="utf-8")
    with pytest.raises(UnitsError, match=r"line 2: new_code '9901' is not a 5-digit code"):
        load_units(bad)
    # names become tags: one that InfluxDB cannot store byte-for-byte is refused here
    bad.write_text("new_code,new_name,old_code,old_name,old_district_code,old_district,share\n"
                   "99001,Xã Mới,18754,Phường Sông Trí,000,Huyện\\,full\n", encoding="utf-8")
    with pytest.raises(UnitsError, match=r"line 2: old_district cannot be stored as an "
                                         "InfluxDB tag: ends with a backslash"):
        load_units(bad)


# --------------------------------------------------------------------------- registry rules


def test_fixture_sites_agree_with_the_reference_data(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_text(sites_toml(SITES), encoding="utf-8")
    assert load_sites(p) == {s.probe_id: s for s in SITES}


def test_names_and_old_district_come_from_the_code(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_text(_entry(commune_code="18652", commune="Hà Huy Tập"), encoding="utf-8")
    site = load_sites(p)["p-test-01"]
    # Phường Hà Huy Tập was formed from units of one old district only.
    assert (site.commune, site.district) == ("Phường Hà Huy Tập", "Thành phố Hà Tĩnh")
    # Phường Sông Trí spans two old districts: without its old unit, no district tag.
    p.write_text(_entry(commune_code="18754"), encoding="utf-8")
    assert load_sites(p)["p-test-01"].district == ""


def test_csv_registry_with_optional_columns(tmp_path: Path) -> None:
    p = tmp_path / "sites.csv"
    p.write_text("probe_id,name,commune_code,legacy_commune_code,latitude,longitude,site_type\n"
                 "thach-ha-02,UBND xã Thạch Đài,18652,18643,18.33,105.87,commune_office\n"
                 "ky-anh-02,UBND phường Sông Trí,18754,,18.07,106.29,commune_office\n",
                 encoding="utf-8")
    sites = load_sites(p)
    assert sites["thach-ha-02"].legacy_commune_code == "18643"
    assert sites["ky-anh-02"].legacy_commune_code == ""


@pytest.mark.parametrize(("entry", "needle"), [
    ({"commune_code": "18001"},
     "site[0] (p-test-01).commune_code: '18001' is not a current unit"),
    ({"commune_code": "1875"}, "site[0] (p-test-01).commune_code: String should match"),
    ({}, "site[0] (p-test-01).commune_code: required (the official 5-digit code"),
    ({"commune_code": "18754", "commune": "Kỳ Anh"},
     "site[0] (p-test-01).commune: 'Kỳ Anh' disagrees with commune_code 18754 "
     "(Phường Sông Trí)"),
    ({"commune_code": "18652", "district": "Huyện Thạch Hà"},
     "site[0] (p-test-01).district: 'Huyện Thạch Hà' disagrees with the reference data"),
    ({"commune_code": "18754", "legacy_commune_code": "18643"},
     "site[0] (p-test-01).legacy_commune_code: 18643 (Xã Thạch Đài) is not one of the units "
     "18754 (Phường Sông Trí) was formed from"),
    ({"legacy_commune_code": "18796"},
     "site[0] (p-test-01).commune_code: required: old unit 18796 (Xã Kỳ Lợi) was split "
     "across 18754 (Phường Sông Trí), 18823 (Phường Vũng Áng), 18832 (Phường Hoành Sơn)"),
    ({"legacy_commune_code": "10000"},
     "site[0] (p-test-01).legacy_commune_code: '10000' is not an old unit"),
])
def test_registry_errors_name_the_row_and_why(tmp_path: Path, entry: dict[str, str],
                                              needle: str) -> None:
    assert needle in _problems(tmp_path, _entry(**entry))


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    text = _problems(tmp_path, _entry(probe_id="BAD ID", commune_code="18754", latitude=95)
                     + _entry(probe_id="ok-probe", commune_code="18754", colour="red"))
    for needle in ("site[0] (BAD ID).probe_id", "site[0] (BAD ID).latitude",
                   "site[1] (ok-probe).colour"):
        assert needle in text, text


def test_a_full_old_unit_places_the_site(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_text(_entry(legacy_commune_code="18820"), encoding="utf-8")  # Phường Kỳ Trinh
    site = load_sites(p)["p-test-01"]
    assert (site.commune_code, site.district) == ("18754", "Thị xã Kỳ Anh")


def test_the_example_registry_is_on_the_current_map() -> None:
    sites = load_sites(REPO / "examples" / "sites.toml")
    assert len(sites) >= 4 and all(s.commune_code for s in sites.values())


# --------------------------------------------------------------------------- dated entries


def test_a_moved_probe_is_tagged_as_of_started_at(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_text(_entry(commune_code="18754")
                 + _entry(commune_code="18652", valid_from=date(2026, 3, 1)), encoding="utf-8")
    table = load_table(p)
    before = table.at("p-test-01", datetime(2026, 2, 28, 16, 59, tzinfo=UTC))
    after = table.at("p-test-01", datetime(2026, 2, 28, 17, 0, tzinfo=UTC))  # 00:00 UTC+7
    assert before is not None and before.commune_code == "18754"
    assert after is not None and after.commune_code == "18652"
    assert table.current()["p-test-01"].commune_code == "18652"
    dup = _entry(commune_code="18754") + _entry(commune_code="18652")
    assert "duplicate probe id 'p-test-01'" in _problems(tmp_path, dup)


def test_span_is_the_site_and_the_interval_it_holds_over(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_text(_entry(commune_code="18754")
                 + _entry(commune_code="18652", valid_from=date(2026, 3, 1)), encoding="utf-8")
    table = load_table(p)
    move = int(datetime(2026, 2, 28, 17, 0, tzinfo=UTC).timestamp() * 1000)
    early = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
    for at in (early, move - 1, move, move + 86_400_000 * 400):
        site, lo, hi = table.span("p-test-01", at)
        # The same answer as at() anywhere in the span, and only there.
        assert site == table.at("p-test-01", datetime.fromtimestamp(at / 1000, UTC))
        assert lo <= at < hi
        assert (lo, hi) == ((-2**62, move) if at < move else (move, 2**62))
    assert table.span("unknown", move) == (None, -2**62, 2**62)


def test_redelivery_after_a_move_is_the_same_point(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    site = SITES[0]
    p.write_text(sites_toml([site]), encoding="utf-8")
    reg = Registry(p)
    msg = make_result(1, started_at=datetime(2026, 3, 5, 8, 0, tzinfo=UTC))
    topic = f"netmon/v1/probes/{site.probe_id}/results"
    first = validate(topic, msg.to_json(), T, reg).lines
    # The probe moves on 10 March; the NOC records it as a new dated entry.
    p.write_text(sites_toml([site]) + _entry(probe_id=site.probe_id, commune_code="18652",
                                             valid_from=date(2026, 3, 10)), encoding="utf-8")
    assert reg.reload()
    again = validate(topic, msg.to_json(), T, reg).lines
    assert again == first and "commune_code=18754" in first[0]
    later = make_result(2, started_at=datetime(2026, 3, 11, 8, 0, tzinfo=UTC))
    assert "commune_code=18652" in validate(topic, later.to_json(), T, reg).lines[0]


# --------------------------------------------------------------------------- identity


def test_two_results_in_one_millisecond_are_two_points() -> None:
    reg = Registry.from_sites(SITES)
    at = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    a, b = (make_result(i, started_at=at, id=uuid.uuid4()) for i in range(2))
    la = validate("netmon/v1/probes/ky-anh-01/results", a.to_json(), T, reg).lines[0]
    lb = validate("netmon/v1/probes/ky-anh-01/results", b.to_json(), T, reg).lines[0]
    series = lambda ln: ln.split(" ", 1)[0]  # noqa: E731
    assert series(la) == series(lb)
    assert la.rsplit(" ", 1)[1] != lb.rsplit(" ", 1)[1]
    # and the offset is a pure function of the id
    assert identity_offset_ns(a.id) == identity_offset_ns(uuid.UUID(str(a.id)))
    assert 0 <= identity_offset_ns(a.id) < 1_000_000


def test_offsets_spread_over_the_millisecond() -> None:
    offsets = {identity_offset_ns(uuid.UUID(int=i)) for i in range(10_000)}
    assert len(offsets) > 9_900  # ~50 collisions expected among 10^4 of 10^6 slots


@pytest.mark.parametrize("name", sorted(RESERVED_METRIC_NAMES))
def test_a_metric_named_like_a_tag_or_field_is_dead_lettered(name: str) -> None:
    reg = Registry.from_sites(SITES)
    msg = make_result(1, metrics={"download_mbps": 10.0, name: 1.0})
    item = validate("netmon/v1/probes/ky-anh-01/results", msg.to_json(), T, reg)
    assert item.lines == [] and item.dead is not None
    assert item.dead.reason == "unstorable" and f"metric name {name!r} is reserved" in (
        item.dead.detail)


def test_reserved_names_are_derived_from_the_schema() -> None:
    assert set(RESULT_TAGS) <= RESERVED_METRIC_NAMES
    assert {"status", "probe", "commune", "commune_code", "result_id"} <= RESERVED_METRIC_NAMES


# --------------------------------------------------------------------------- config


def test_the_reference_map_comes_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "next.csv").write_text(
        "new_code,new_name,old_code,old_name,old_district_code,old_district,share\n"
        "99001,Xã Mới,18754,Phường Sông Trí,000,(none),full\n", encoding="utf-8")
    (tmp_path / "sites.toml").write_text(_entry(commune_code="99001"), encoding="utf-8")
    cfg_path = tmp_path / "collector.toml"
    cfg_path.write_text('[registry]\npath = "sites.toml"\nunits_file = "ref/next.csv"\n'
                        "units_effective = 2030-01-01\n", encoding="utf-8")
    cfg = collector_config.load(cfg_path)
    assert cfg.registry.units_file == tmp_path / "ref" / "next.csv"  # relative to the file
    units = collector_config.unit_map(cfg, cfg_path)
    assert (len(units.units), units.effective) == (1, date(2030, 1, 1))
    reg = collector_config.open_registry(cfg, cfg_path)
    site = reg.get("p-test-01")
    assert site is not None and site.commune == "Xã Mới"
    # the reload keeps checking against the configured map, not the packaged one
    (tmp_path / "sites.toml").write_text(_entry(commune_code="18754"), encoding="utf-8")
    assert not reg.reload()
    # without units_file: the packaged map
    default = collector_config.unit_map(collector_config.load(None))
    assert default.source == DEFAULT_FILE and len(default.units) == 69


@pytest.mark.parametrize(("content", "needle"), [
    (None, "reference data file not found"),
    ("new_code,name\n", "header must start with new_code,new_name"),
    ("new_code,new_name,old_code,old_name,old_district_code,old_district,share\n"
     "18754,Phường Sông Trí,18820,Phường Kỳ Trinh,440,Thị xã Kỳ Anh,most\n",
     "line 2: share must be 'full' or 'partial'"),
])
def test_a_bad_units_file_is_a_config_error_naming_the_key(
        tmp_path: Path, content: str | None, needle: str) -> None:
    if content is not None:
        (tmp_path / "units.csv").write_text(content, encoding="utf-8")
    cfg_path = tmp_path / "collector.toml"
    cfg_path.write_text('[registry]\nunits_file = "units.csv"\n', encoding="utf-8")
    cfg = collector_config.load(cfg_path)
    with pytest.raises(ConfigError) as err:
        collector_config.open_registry(cfg, cfg_path)
    [problem] = err.value.problems
    assert problem.startswith("registry.units_file: ") and needle in problem, problem
    assert str(cfg_path) in err.value.report()

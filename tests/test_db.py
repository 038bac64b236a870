"""The local hotel database: building, every filter, bad arguments, ordering, rebuild on first use, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.db import HotelDB, SearchError, SearchResult, build_db
from tooltune.hotels import RECORD_KEYS

FAC = ["24小时热水", "叫醒服务"]
# name, type, price, rating, extra facilities: small enough to know every answer by reading it.
HOTELS = [
    ("北京饭店", "豪华型", 800, 4.8, ["SPA", "国际长途电话", "接机服务"]),
    ("如家酒店(北京站店)", "经济型", 200, 4.5, ["早餐服务"]),
    ("如家酒店(西站店)", "经济型", 150, 4.5, ["早餐服务", "国际长途电话"]),
    ("汉庭酒店", "经济型", None, 4.9, []),
    ("北京大饭店", "高档型", 500, 4.0, ["室内游泳池"]),
    ("七天酒店", "经济型", 100, 3.5, ["收费停车位"]),
]


def write_hotels(root: Path, hotels=HOTELS) -> Path:
    (root / "crosswoz").mkdir(parents=True, exist_ok=True)
    raw = [[n, {"名称": n, "酒店类型": t, "地址": "北京", "地铁": "某站", "电话": "010", "酒店设施": FAC + f,
                "价格": p, "评分": r}] for n, t, p, r, f in hotels]
    path = root / "crosswoz" / "hotel_db.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[HotelDB, Path, Path]:
    root = tmp_path_factory.mktemp("data")
    write_hotels(root)
    db_path = root / "hotels.sqlite"
    return HotelDB.open(db_path, root), db_path, root


def names(result: SearchResult) -> list[str]:
    return [r["name"] for r in result.records]


def test_records_have_the_course_form(small):
    rec = small[0].search({"name": "北京饭店"}).records[0]
    assert tuple(rec) == RECORD_KEYS
    assert rec == {"name": "北京饭店", "type": "豪华型", "address": "北京", "subway": "某站", "phone": "010",
                   "facilities": FAC + ["SPA", "国际长途电话", "接机服务"], "price": 800.0, "rating": 4.8,
                   "hotel_id": 0}


def test_no_filter_orders_by_rating_then_price_and_keeps_unpriced_hotels(small):
    db = small[0]
    assert names(db.search({}, limit=10)) == ["汉庭酒店", "北京饭店", "如家酒店(西站店)", "如家酒店(北京站店)",
                                               "北京大饭店", "七天酒店"]
    assert names(db.search({})) == ["汉庭酒店", "北京饭店", "如家酒店(西站店)"]   # limit defaults to 3
    assert len(db.search({}, limit=1).records) == 1


def test_database_order_ranks_by_hotel_id(small):
    db = small[0]
    assert [r["hotel_id"] for r in db.search({}, limit=10, order="database").records] == [0, 1, 2, 3, 4, 5]
    assert names(db.search({"name": "北京饭店"}, order="database")) == ["北京饭店", "北京大饭店"]  # name first
    with pytest.raises(SearchError, match="order"):
        db.search({}, order="price")


def test_type_is_exact(small):
    assert names(small[0].search({"type": "高档型"}, limit=10)) == ["北京大饭店"]


def test_price_bounds_are_inclusive_and_exclude_unpriced_hotels(small):
    db = small[0]
    assert names(db.search({"price_range_lower": 200}, limit=10)) == ["北京饭店", "如家酒店(北京站店)", "北京大饭店"]
    assert names(db.search({"price_range_upper": 150}, limit=10)) == ["如家酒店(西站店)", "七天酒店"]
    both = db.search({"price_range_lower": 150, "price_range_upper": 200}, limit=10)
    assert names(both) == ["如家酒店(西站店)", "如家酒店(北京站店)"]
    assert "汉庭酒店" in names(db.search({"type": "经济型"}, limit=10))


def test_rating_bounds_are_inclusive(small):
    db = small[0]
    assert names(db.search({"rating_range_lower": 4.8}, limit=10)) == ["汉庭酒店", "北京饭店"]
    assert names(db.search({"rating_range_upper": 4.0}, limit=10)) == ["北京大饭店", "七天酒店"]
    assert names(db.search({"rating_range_lower": 4.5, "rating_range_upper": 4.5}, limit=10)) == \
        ["如家酒店(西站店)", "如家酒店(北京站店)"]


def test_every_facility_is_required(small):
    db = small[0]
    assert names(db.search({"facilities": ["早餐服务"]}, limit=10)) == ["如家酒店(西站店)", "如家酒店(北京站店)"]
    r = db.search({"facilities": ["早餐服务", "国际长途电话"]}, limit=10)
    assert names(r) == ["如家酒店(西站店)"]
    assert r.facilities == {"早餐服务": "早餐服务", "国际长途电话": "国际长途电话"} and r.unmatched == []


def test_facility_paraphrases_are_mapped(small):
    db = small[0]
    r = db.search({"facilities": ["机场接送", "国际电话"]}, limit=10)   # hand rules (no train data here)
    assert names(r) == ["北京饭店"]
    assert r.facilities == {"机场接送": "接机服务", "国际电话": "国际长途电话"}
    assert names(db.search({"facilities": ["室内的游泳池"]})) == ["北京大饭店"]   # n-gram similarity


def test_unmatched_facility_is_reported_and_skipped(small):
    r = small[0].search({"facilities": ["电视机"], "type": "高档型"})
    assert names(r) == ["北京大饭店"]
    assert r.facilities == {"电视机": None} and r.unmatched == ["电视机"]


def test_name_needs_every_character_and_ranks_by_similarity(small):
    db = small[0]
    assert names(db.search({"name": "北京饭店"}, limit=10)) == ["北京饭店", "北京大饭店"]
    assert names(db.search({"name": "如家西站"}, limit=10)) == ["如家酒店(西站店)"]
    assert names(db.search({"name": "希尔顿"}, limit=10)) == []


def test_filters_combine_with_and(small):
    r = small[0].search({"type": "经济型", "price_range_upper": 180, "rating_range_lower": 4, "facilities": ["早餐"]})
    assert names(r) == ["如家酒店(西站店)"]


@pytest.mark.parametrize("args, field", [
    ({"city": "北京"}, "city"),
    ({"type": "五星级"}, "type"),
    ({"price_range_lower": "300"}, "price_range_lower"),
    ({"price_range_lower": True}, "price_range_lower"),
    ({"price_range_lower": -1}, "price_range_lower"),
    ({"rating_range_lower": 5.5}, "rating_range_lower"),
    ({"rating_range_upper": -0.5}, "rating_range_upper"),
    ({"facilities": "早餐服务"}, "facilities"),
    ({"facilities": [1]}, "facilities"),
    ({"facilities": [" "]}, "facilities"),
    ({"name": None}, "name"),
    ({"name": "  "}, "name"),
    ({"price_range_lower": 500, "price_range_upper": 300}, "price_range_lower"),
    ({"rating_range_lower": 4.5, "rating_range_upper": 4}, "rating_range_upper"),
    ({"price_range_upper": float("nan")}, "price_range_upper"),
])
def test_bad_arguments_raise_a_typed_error_naming_the_field(small, args, field):
    with pytest.raises(SearchError) as e:
        small[0].search(args)
    assert field in e.value.fields and field in str(e.value)


def test_bad_limit_and_non_object_arguments(small):
    with pytest.raises(SearchError, match="limit"):
        small[0].search({}, limit=0)
    with pytest.raises(SearchError, match="object"):
        small[0].search(["type"])


def test_sql_is_never_built_from_input(small):
    db = small[0]
    assert names(db.search({"name": "'; DROP TABLE hotels; --"})) == []
    assert db.search({"type": "经济型"}, limit=10).records   # the table is still there


def test_searches_from_several_threads_agree(small):
    db, out = small[0], {}

    def work(i: int) -> None:
        out[i] = [names(db.search({"type": "经济型"}, limit=10)) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = names(db.search({"type": "经济型"}, limit=10))
    assert all(run == expected for runs in out.values() for run in runs)


def test_built_on_first_use_and_rebuilt_when_the_source_changes(tmp_path):
    source = write_hotels(tmp_path)
    db_path = tmp_path / "cache" / "hotels.sqlite"
    assert not db_path.exists()
    assert HotelDB.open(db_path, tmp_path).search({"name": "七天"}).records[0]["price"] == 100.0
    assert db_path.exists()
    changed = [h if h[0] != "七天酒店" else ("七天酒店", "经济型", 120, 3.5, []) for h in HOTELS]
    write_hotels(tmp_path, changed)
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))   # same size is no excuse
    assert HotelDB.open(db_path, tmp_path).search({"name": "七天"}).records[0]["price"] == 120.0
    mtime = db_path.stat().st_mtime_ns
    HotelDB.open(db_path, tmp_path)
    assert db_path.stat().st_mtime_ns == mtime   # current: not rebuilt


def test_a_file_that_is_no_database_is_not_overwritten(tmp_path, capsys):
    write_hotels(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes", encoding="utf-8")
    assert main(["db", "search", "{}", "--db", str(notes), "--data-dir", str(tmp_path)]) == 2
    assert "not a tooltune hotel database" in capsys.readouterr().err
    assert notes.read_text(encoding="utf-8") == "my notes"


def test_build_report_and_tables(tmp_path):
    write_hotels(tmp_path)
    report = build_db(tmp_path / "h.sqlite", tmp_path)
    assert (report.hotels, report.learned_aliases, report.train_source) == (6, 0, None)
    assert report.facilities == 8 and report.hand_aliases > 0
    con = sqlite3.connect(report.path)
    assert con.execute("SELECT COUNT(*) FROM hotels WHERE price IS NULL").fetchone() == (1,)
    con.close()


# ---- the real database -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(data_root, tmp_path_factory) -> HotelDB:
    return HotelDB.open(tmp_path_factory.mktemp("real") / "hotels.sqlite", data_root)


def test_real_database_answers_the_issue_example(real):
    r = real.search({"type": "经济型", "rating_range_lower": 4.5}, limit=20)
    assert len(r.records) == 20
    assert all(h["type"] == "经济型" and h["rating"] >= 4.5 for h in r.records)
    ratings = [h["rating"] for h in r.records]
    assert ratings == sorted(ratings, reverse=True)


def test_real_database_learned_paraphrases(real):
    assert len(real.facility_names) == 37
    r = real.search({"facilities": ["能打国际长途", "全天供应热水"]})
    assert r.facilities == {"能打国际长途": "国际长途电话", "全天供应热水": "24小时热水"}
    assert all({"国际长途电话", "24小时热水"} <= set(h["facilities"]) for h in r.records)


# ---- the CLI ---------------------------------------------------------------------------------------------------------

def test_cli_build_and_search(small, tmp_path, capsys):
    _, _, root = small
    out = tmp_path / "x.sqlite"
    assert main(["db", "build", "--data-dir", str(root), "--out", str(out)]) == 0
    assert out.exists() and "6 hotels" in capsys.readouterr().err
    args = json.dumps({"type": "经济型", "facilities": ["早餐服务", "电视机"]}, ensure_ascii=False)
    assert main(["db", "search", args, "--db", str(out), "--limit", "1"]) == 0
    captured = capsys.readouterr()
    assert "如家酒店" in captured.out   # ensure_ascii=False: Chinese as is
    assert [h["name"] for h in json.loads(captured.out)] == ["如家酒店(西站店)"]
    assert "电视机" in captured.err


@pytest.mark.parametrize("arguments, message", [
    ("{not json", "not valid JSON"),
    ('{"rating_range_lower": 7}', "rating_range_lower"),
    ('{"colour": "red"}', "unknown argument"),
    ('["type"]', "object"),
])
def test_cli_bad_arguments_exit_2_without_traceback(small, capsys, arguments, message):
    assert main(["db", "search", arguments, "--db", str(small[1])]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

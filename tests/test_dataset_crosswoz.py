"""CrossWOZ -> seed hotel dialogues: value parsing, dialog.json, and hotel parts of the full dialogues."""

from __future__ import annotations

import json
import zipfile

import pytest

from tooltune.dataset import crosswoz
from tooltune.dataset.crosswoz import Unmappable, parse_price, parse_rating, parse_type, state_arguments
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Result, User
from tooltune.errors import InputError
from tooltune.hotels import load_hotels
from tooltune.schema import argument_problems


@pytest.fixture(scope="module")
def hotels(hotel_db_json):
    return {h["name"]: h for h in load_hotels(hotel_db_json)}


def test_parse_price_rating_type():
    assert parse_price("300-400元") == {"price_range_lower": 300, "price_range_upper": 400}
    assert parse_price("1000元以上") == {"price_range_lower": 1000}
    assert parse_price("450元以下") == {"price_range_upper": 450}
    assert parse_rating("4.5分以上") == {"rating_range_lower": 4.5}
    assert parse_rating("5分") == {"rating_range_lower": 5.0, "rating_range_upper": 5.0}
    assert parse_type("经济") == "经济型" and parse_type("豪华型") == "豪华型"
    with pytest.raises(Unmappable, match="implausible price"):
        parse_price("4.5元以上")  # a rating typed into CrossWOZ's price slot
    with pytest.raises(Unmappable, match="unparsed price"):
        parse_price("便宜点")
    with pytest.raises(Unmappable, match="unknown hotel type"):
        parse_type("民宿")


def test_state_arguments_follow_the_tool_order_and_refuse_nearby_constraints():
    args = state_arguments({"名称": "", "酒店类型": "高档", "酒店设施": "无烟房 叫醒服务", "价格": "200-300元",
                            "评分": "4分以上", "周边景点": "", "selectedResults": []})
    assert list(args) == ["type", "facilities", "price_range_lower", "price_range_upper", "rating_range_lower"]
    assert args["facilities"] == ["无烟房", "叫醒服务"] and args["type"] == "高档型"
    with pytest.raises(Unmappable, match="nearby"):
        state_arguments({"周边景点": "故宫"})


def test_dialog_json_becomes_course_shaped_seeds(data_root, hotels):
    path = data_root / "hotel/agiclass_hotel_chatbot/dialog.json"
    raw = json.loads(path.read_text(encoding="utf-8"))[:40]
    items, removed = crosswoz.load_dialog_json(path, hotels, "dialog.json", limit=40)
    assert len(items) + len(removed) == 40 and not removed
    first, src = items[0].dialogue.turns, raw[0]
    # usr -> user + search (+ return when the turn names hotels), sys -> assistant, as the course's seeds do
    assert isinstance(first[0], User) and first[0].content == src[0]["content"]
    assert isinstance(first[1], Call)
    assert first[1].arguments == {crosswoz.DSL_KEYS[k]: v for k, v in src[0]["dsl"].items()}
    assert isinstance(first[2], Result) and [r["name"] for r in first[2].records] == src[0]["hotels"]
    assert first[2].records[0] == hotels[src[0]["hotels"][0]]
    assert isinstance(first[3], Assistant) and first[3].content == src[1]["content"]
    for item in items:
        for call in item.dialogue.calls:
            assert argument_problems(HOTEL_TOOL, call.arguments) == []


def test_zip_hotel_parts_are_searches_with_database_records(data_root, hotels):
    items, removed = crosswoz.load_crosswoz_zip(data_root / "crosswoz/val.json.zip", hotels, "val", limit=80)
    assert items and removed
    for item in items:
        turns = item.dialogue.turns
        assert isinstance(turns[0], User) and isinstance(turns[1], Call)
        for t in turns:
            if isinstance(t, Call):
                assert t.arguments and argument_problems(HOTEL_TOOL, t.arguments) == []
            if isinstance(t, Result):
                assert all(r == hotels[r["name"]] for r in t.records)
    assert all(r.reason and r.source == "val" and "/" in r.index for r in removed)


def _zip(tmp_path, dialogues):
    path = tmp_path / "mini.json.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mini.json", json.dumps(dialogues, ensure_ascii=False))
    return path


def _sys(content, init, final=None, selected=()):
    final = dict(final or init, selectedResults=list(selected))
    return {"role": "sys", "content": content, "dialog_act": [],
            "sys_state_init": {"酒店": dict(init, selectedResults=list(selected))}, "sys_state": {"酒店": final}}


def test_zip_part_asks_then_cut_before_nearby_question(tmp_path, hotels):
    name = "北京京泰龙国际大酒店"
    init = {"价格": "400-500元", "评分": "5分"}
    messages = [
        {"role": "usr", "content": "去哪吃饭？", "dialog_act": [["Request", "餐馆", "名称", ""]]},
        _sys("去全聚德。", {}),
        {"role": "usr", "content": "再找个400-500元、评分5分的酒店。", "dialog_act": [["Inform", "酒店", "价格", "400-500元"]]},
        # the system relaxed the rating (sys_state); the arguments keep the user's constraint (sys_state_init)
        _sys(f"推荐{name}。", init, final={"价格": "400-500元", "评分": "4.5分以上"}, selected=[name]),
        {"role": "usr", "content": "电话多少？", "dialog_act": [["Request", "酒店", "电话", ""]]},
        _sys("010-1234。", init, selected=[name]),
        {"role": "usr", "content": "周边有什么景点？", "dialog_act": [["Request", "酒店", "周边景点", ""]]},
        _sys("故宫。", init, selected=[name]),
    ]
    items, removed = crosswoz.load_crosswoz_zip(_zip(tmp_path, {"7": {"messages": messages}}), hotels, "mini")
    assert len(items) == 1 and items[0].index == "7/0"
    turns = items[0].dialogue.turns
    assert [t.role for t in turns] == ["user", "call", "result", "assistant", "user", "assistant"]
    assert turns[1].arguments == {"price_range_lower": 400, "price_range_upper": 500,
                                  "rating_range_lower": 5.0, "rating_range_upper": 5.0}
    assert turns[2].records == [hotels[name]]
    assert [(r.reason, r.kept) for r in removed] == [("cut short", True)]
    assert "asks for nearby places" in removed[0].detail


def test_zip_part_with_unknown_hotel_is_removed_and_listed(tmp_path, hotels):
    messages = [{"role": "usr", "content": "找个经济型酒店", "dialog_act": [["Inform", "酒店", "酒店类型", "经济型"]]},
                _sys("推荐不存在酒店。", {"酒店类型": "经济型"}, selected=["不存在酒店"])]
    items, removed = crosswoz.load_crosswoz_zip(_zip(tmp_path, {"3": {"messages": messages}}), hotels, "mini")
    assert items == [] and [(r.index, r.reason, r.detail) for r in removed] == [("3/0", "unknown hotel", "不存在酒店")]


def test_broken_inputs_raise_located_input_errors(tmp_path, hotels):
    bad = tmp_path / "bad.json.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.json.zip"):
        crosswoz.load_crosswoz_zip(bad, hotels, "bad")
    broken = tmp_path / "dialog.json"
    broken.write_text('[{"role": "usr",', encoding="utf-8")
    with pytest.raises(InputError, match=r"dialog.json:1"):
        crosswoz.load_dialog_json(broken, hotels, "dialog.json")

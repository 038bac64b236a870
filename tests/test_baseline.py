"""The rules-and-retrieval baseline: slot regexes on hand-written sentences, carry-over, reply refill, and a small
fit on real train units (fast: a few hundred units, no network)."""

from __future__ import annotations

import json

import pytest

from tooltune.baseline import RulesConfig, RulesModel, read_units
from tooltune.baseline.bleu import char_bleu, consensus
from tooltune.baseline.calls import CarryConfig, merge, sentence_slots
from tooltune.baseline.lexicon import Lexicon, NameFinder
from tooltune.baseline.replies import delexicalise, recent_results
from tooltune.baseline.retrieval import TfIdfIndex
from tooltune.baseline.slots import chinese_to_int, hotel_type, normalise, numeric_slots
from tooltune.evaluate.units import Unit
from tooltune.dialogue import Assistant, Call, Result, User
from tooltune.errors import InputError


@pytest.mark.parametrize("text, expected", [
    ("我想找一个300到400元的酒店", {"price_range_lower": 300, "price_range_upper": 400}),
    ("价格在200-300元之间", {"price_range_lower": 200, "price_range_upper": 300}),
    ("三百多块的就行", {"price_range_lower": 300, "price_range_upper": 400}),
    ("价格四百多的酒店", {"price_range_lower": 400, "price_range_upper": 500}),
    ("预订一个五六百元左右的酒店", {"price_range_lower": 500, "price_range_upper": 600}),
    ("价格不超过500", {"price_range_upper": 500}),
    ("价格不要超过1100", {"price_range_upper": 1100}),
    ("价格在200以内的", {"price_range_upper": 200}),
    ("要1000元以上的", {"price_range_lower": 1000}),
    ("请问有价格比800高的酒店吗", {"price_range_lower": 800}),
    ("评分4.5分以上", {"rating_range_lower": 4.5}),
    ("评分是5分的酒店", {"rating_range_lower": 5, "rating_range_upper": 5}),
    ("评分不低于4分，价格低于600元", {"rating_range_lower": 4, "price_range_upper": 600}),
    ("价格不能低于800元", {"price_range_lower": 800}),
    ("有24小时热水的酒店", {}),
    ("我对服务十分满意", {}),
    ("价格是500元的那家", {}),
])
def test_numeric_slots(text, expected):
    assert numeric_slots(text) == expected


def test_chinese_numerals():
    assert [chinese_to_int(w) for w in ("三百", "一千二", "十五", "两千", "五")] == [300, 1200, 15, 2000, 5]
    assert chinese_to_int("三百块") is None
    assert normalise("一千到一千五百元") == "1000-1500元"
    assert normalise("找一家酒店") == "找一家酒店"  # a digit word without a unit stays a word


@pytest.mark.parametrize("text, expected", [
    ("帮我找个经济的酒店", "经济型"), ("我要豪华型酒店", "豪华型"), ("舒适一点的就行", "舒适型"),
    ("高档酒店有吗", "高档型"), ("价格在300元以内", None),
])
def test_hotel_type(text, expected):
    assert hotel_type(text) == expected


def _call_unit(text: str, args: dict, before=()) -> Unit:
    return Unit("t:0:1", tuple(before) + (User(text),), Call(args))


def test_lexicon_facilities_and_names():
    units = [_call_unit("有国际长途电话和wifi的酒店", {"facilities": ["国际长途电话", "wifi"]}),
             _call_unit("要能打国际长途的", {"facilities": ["能打国际长途"]}),
             _call_unit("我想订一下那个万寿宾馆，帮我查查", {"name": "万寿宾馆"})]
    lex = Lexicon.learn(units)
    # longest match wins: "国际长途电话" is not read as a second, shorter facility
    assert lex.find_facilities("要有wifi和国际长途电话") == ["wifi", "国际长途电话"]
    assert lex.find_name("我想订一下那个京燕饭店，帮我查查") == "京燕饭店"
    assert lex.find_name("我想订一下那个京燕饭店，帮我查查", known_names=["北京京燕饭店"]) == "京燕饭店"
    assert lex.find_name("我想订一下那个评分高的，帮我查查", known_names=["北京京燕饭店"]) is None


def test_paraphrase_table_and_located_wifi():
    units = [_call_unit("想要有早餐的酒店", {"facilities": ["早餐服务"]}),
             _call_unit("最好有早餐", {"facilities": ["早餐服务"]}),
             _call_unit("有早餐服务吗", {"facilities": ["早餐服务"]}),
             _call_unit("要有wifi", {"facilities": ["wifi"]})]
    lex = Lexicon.learn(units)
    assert lex.paraphrases == {"早餐": "早餐服务"}  # seen twice, never written as is
    assert lex.find_facilities("有没有提供早餐的") == ["早餐服务"]
    assert lex.find_facilities("有早餐服务的") == ["早餐服务"]
    # a network the user locates is kept whole; a bare one stays bare
    assert lex.find_facilities("价格还可以，公共区域和一些房间都有wifi吗？") == ["公共区域和一些房间都有wifi"]
    assert lex.find_facilities("帮我找一家提供wifi的酒店") == ["wifi"]


def test_name_finder_uses_database_variants_and_train_spelling():
    names = ["北京中奥凯富国际酒店", "汉庭酒店(北京王府井店)", "汉庭酒店(北京新阜成门店)", "全季酒店(北京望京店)"]
    train = [_call_unit("我想订一间汉庭酒店", {"name": "汉庭"})]
    finder = NameFinder(names, train)
    assert finder.find("帮我查一下中奥凯富国际酒店") == "中奥凯富国际酒店"
    assert finder.find("我想找一家全季酒店") == "全季酒店"
    assert finder.find("我想找一个汉庭酒店") == "汉庭"  # train's spelling for this variant
    assert finder.find("帮我找个评分4.5分以上的酒店") is None
    assert finder.find("帮我找个酒店，叫全季酒店望京店") == "全季酒店望京店"  # a branch the user adds stays
    assert finder.find("有没有全季酒店这个酒店") == "全季酒店"
    # a chain the database holds only with a branch: guessed from the words that introduce a name
    assert finder.guess("帮我找个酒店，叫汉庭") == "汉庭"
    assert finder.guess("我想订一下那个全季酒店，帮我查查") == "全季"
    assert finder.guess("帮我找个酒店，叫首旅") is None  # shares nothing with a database name
    assert finder.guess("我想找一家合适型的酒店") is None


def test_carry_over_keeps_earlier_constraints_and_overrides_restated_ones():
    lex = Lexicon(facilities=["早餐服务", "酒吧"], renames={"无障碍设施": "残疾人设施"})
    first = merge(None, sentence_slots("帮我推荐一个能提供早餐服务的酒店，300到400元", lex), lex)
    assert first == {"facilities": ["早餐服务"], "price_range_lower": 300, "price_range_upper": 400}
    second = merge(first, sentence_slots("那就帮我推荐一个经济酒店吧，价格不超过500", lex), lex)
    assert second == {"type": "经济型", "facilities": ["早餐服务"], "price_range_lower": 300,
                      "price_range_upper": 500}
    # new facilities replace the carried ones; a name query starts afresh
    third = merge(second, sentence_slots("这几家里哪家有酒吧？", lex), lex)
    assert third["facilities"] == ["酒吧"] and third["type"] == "经济型"
    joined = merge(second, {"facilities": ["酒吧"]}, lex, CarryConfig(replace_facilities=False))
    assert joined["facilities"] == ["早餐服务", "酒吧"]
    assert merge(second, {"name": "万寿宾馆"}, lex) == {"name": "万寿宾馆"}
    # a new bound past the carried opposite one replaces the range; one within it keeps it
    assert merge(second, {"price_range_lower": 1000}, lex)["price_range_lower"] == 1000
    assert "price_range_upper" not in merge(second, {"price_range_lower": 1000}, lex)
    assert merge(second, {"price_range_lower": 350}, lex)["price_range_upper"] == 500
    # a carried paraphrase takes the name train's later calls give it
    assert merge({"facilities": ["无障碍设施"]}, {"rating_range_lower": 4.5}, lex)["facilities"] == ["残疾人设施"]
    assert merge({"facilities": ["无障碍设施"]}, {}, lex, CarryConfig(rename_carried=False))["facilities"] == \
        ["无障碍设施"]


def test_carried_paraphrase_becomes_the_closest_database_facility():
    lex = Lexicon(renames={"开会房间": "会议室"}, canonical=["室内游泳池", "24小时热水", "会议室", "早餐服务"])
    assert lex.canonical_name("室内游泳场") == "室内游泳池"
    assert lex.canonical_name("全天供应24小时热水") == "24小时热水"
    assert lex.canonical_name("开会房间") == "会议室"  # train's own rename first
    assert lex.canonical_name("早餐服务") == "早餐服务"  # a database name stays
    carried = merge({"facilities": ["室内游泳场", "早餐服务"]}, {"type": "豪华型"}, lex)
    assert carried["facilities"] == ["室内游泳池", "早餐服务"]


def _record(name, price, rating, phone="010-1", address="北京某路1号", type_="舒适型"):
    return {"name": name, "type": type_, "address": address, "subway": "某站", "phone": phone,
            "facilities": ["宽带上网"], "price": price, "rating": rating, "hotel_id": 0}


def test_refill_replaces_every_record_value_with_the_current_records():
    old = [_record("北京新世界酒店", 989.0, 4.6, phone="010-59608888")]
    reply = "推荐您去北京新世界酒店，价格是989元，评分4.6分，电话010-59608888。"
    template = delexicalise(reply, recent_results([User("x"), Call({}), Result(old)]))
    assert template.fill([old]) == reply
    new = [_record("如家快捷酒店(北京天坛店)", 228.0, 4.1, phone="010-67001234")]
    assert template.fill([new]) == "推荐您去如家快捷酒店(北京天坛店)，价格是228元，评分4.1分，电话010-67001234。"
    assert template.fill([[]]) is None  # no record to name: the template does not apply


def test_refill_uses_the_user_mentions_and_keeps_record_order():
    two = [_record("甲酒店", 300.0, 4.5), _record("乙酒店", 400.0, 4.0)]
    template = delexicalise("乙酒店和甲酒店都提供宽带上网。", [two], mentions=["宽带上网"])
    swapped = [_record("丙酒店", 1.0, 5.0), _record("丁酒店", 2.0, 5.0)]
    assert template.fill([swapped], mentions=["叫醒服务"]) == "丁酒店和丙酒店都提供叫醒服务。"
    assert template.fill([swapped]) is None
    # a missing price (-1.0 in the data) cannot fill a price slot
    priced = delexicalise("价格是300元。", [two])
    assert priced.fill([[_record("戊酒店", -1.0, 4.0)]]) is None


def test_tfidf_nearest_and_consensus():
    index = TfIdfIndex(["这家酒店的价格是多少？", "帮我找个经济型酒店", "这家酒店的评分是多少？"])
    assert index.nearest("这个酒店的价格是多少", 1)[0][0] == 0
    assert char_bleu("推荐您去甲酒店。", "推荐您去甲酒店。") == pytest.approx(1.0)
    assert char_bleu("推荐您去甲酒店。", "") == 0.0
    # the outlier loses to the two that agree
    assert consensus(["为您推荐甲酒店。", "推荐您去甲酒店。", "推荐您去甲酒店吧。"],
                     ["为您推荐甲酒店。", "推荐您去甲酒店。", "推荐您去甲酒店吧。"], [1, 1, 1]) in (1, 2)


def test_model_on_real_units(course_dir):
    train = read_units(course_dir / "train.llama2.reconstructed.jsonl", "train")[:800]
    model = RulesModel().fit(train)
    call = model.predict((User("你好，请帮我找一个价格在300-400元之间的经济型酒店，最好有早餐服务"),))
    assert isinstance(call, Call)
    assert call.arguments["price_range_lower"] == 300 and call.arguments["type"] == "经济型"
    records = [_record("北京测试大酒店", 350.0, 4.4)]
    reply = model.predict((User("帮我找个经济型酒店"), Call({"type": "经济型"}), Result(records)))
    assert isinstance(reply, Assistant) and "北京测试大酒店" in reply.content
    # an opening request is always searched, even one the nearest train sentences would answer in words
    opening = "这家酒店的电话是多少？"
    assert not model.is_call(opening)
    assert isinstance(model.predict((User(opening),)), Call)
    with pytest.raises(InputError):
        model.predict(())


def test_config_is_checked_where_defined():
    with pytest.raises(InputError, match="candidates"):
        RulesConfig(candidates=0)
    with pytest.raises(InputError, match="temperature"):
        RulesConfig(temperature=-1.0)


def test_read_units_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"context": json.dumps([{"role": "user", "content": "你好"}]),
            "response": json.dumps({"role": "assistant", "content": "您好"})}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"context": "[]", "response": "{}"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_units(path)
    assert f"{path}:2" in str(err.value) and "context" in str(err.value)
    path.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert read_units(path, "x")[0].id == "x:0:1"

"""The five dialogue formats on the course data and on hand-made edge cases; every test loops over `FILE_FORMATS`."""

from __future__ import annotations

import json

import pytest
from conftest import read_jsonl

from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, Result, User, dialogue_to_seed
from tooltune.datafiles import FILE_FORMATS, detect_format, read_dialogues, read_file, write_dialogues

SPLITS = {"train": 1602, "dev": 201, "test": 201}
LLAMA2 = {"test": ("test.llama2.jsonl", 560), "dev": ("dev.llama2.jsonl", 537),
          "train": ("train.llama2.reconstructed.jsonl", 4279)}


def seed_text(dialogues: list[Dialogue]) -> list[str]:
    """Dialogues as seed JSON text: equal only with the same key order and the same int/float types."""
    return [json.dumps(dialogue_to_seed(d), ensure_ascii=False) for d in dialogues]


@pytest.fixture(scope="module")
def course_test(course_dir) -> list[Dialogue]:
    return read_dialogues(course_dir / "test.chatglm3.jsonl")


@pytest.mark.parametrize("split", SPLITS)
def test_course_split_reads_every_dialogue(course_dir, split):
    report = read_file(course_dir / f"{split}.chatglm3.jsonl")
    assert report.format == "chatglm3"
    assert len(report.dialogues) == SPLITS[split]
    calls = sum(len(d.calls) for d in report.dialogues)
    assert report.counts["filler turns dropped"] == calls  # exactly one filler before each call, none elsewhere
    assert not any(isinstance(t, Assistant) and "search_hotels工具" in t.content
                   for d in report.dialogues for t in d.turns)


@pytest.mark.parametrize("split", LLAMA2)
def test_chatglm3_to_llama2_is_the_course_conversion(course_dir, tmp_path, split):
    name, samples = LLAMA2[split]
    out = tmp_path / "out.jsonl"
    report = write_dialogues(read_dialogues(course_dir / f"{split}.chatglm3.jsonl"), out, "llama2")
    assert report.records == samples
    assert report.counts["call samples"] + report.counts["reply samples"] == samples
    assert read_jsonl(out) == read_jsonl(course_dir / name)
    if split == "test":
        assert (report.counts["call samples"], report.counts["reply samples"]) == (242, 318)
        assert out.read_bytes() == (course_dir / name).read_bytes()


def test_chatglm3_write_back_reproduces_the_course_file(course_dir, course_test, tmp_path):
    out = tmp_path / "test.chatglm3.jsonl"
    report = write_dialogues(course_test, out, "chatglm3")
    assert report.counts["filler turns inserted"] == 242
    assert out.read_bytes() == (course_dir / "test.chatglm3.jsonl").read_bytes()


@pytest.mark.parametrize("split", ["test", "dev"])
def test_llama2_samples_group_back_into_the_course_dialogues(course_dir, split):
    from_samples = read_file(course_dir / LLAMA2[split][0])
    assert from_samples.format == "llama2"
    assert from_samples.counts["samples grouped into dialogues"] == LLAMA2[split][1]
    assert seed_text(from_samples.dialogues) == seed_text(read_dialogues(course_dir / f"{split}.chatglm3.jsonl"))


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_course_test_split_round_trips(course_test, tmp_path, fmt):
    out = tmp_path / f"test.{fmt}.jsonl"
    write_dialogues(course_test, out, fmt)
    assert detect_format(out) == fmt
    back = read_dialogues(out)
    assert seed_text(back) == seed_text(course_test)
    assert [d.tools for d in back] == [d.tools for d in course_test]
    assert [[t.name for t in d.calls] for d in back] == [[t.name for t in d.calls] for d in course_test]


ARGS = {"type": "经济型", "facilities": ["无烟房", "吹风机"], "price_range_upper": 300.0, "rating_range_lower": 4}
HOTEL = {"name": "北京红驿栈酒店", "price": 344.0, "rating": 4.7, "facilities": ["无烟房"], "hotel_id": 51}
EDGE_CASES = {
    "unanswered call at the end": [User("找个经济型酒店"), Call(ARGS)],
    "unanswered call, then the user": [User("找酒店"), Call({"name": "红驿栈"}), User("算了"), Assistant("好的")],
    "multi-search": [User("找两家"), Call(ARGS), Result([HOTEL]), Call({"price_range_lower": 1000}), Result([]),
                     Assistant("只找到一家")],
    "empty records": [User("有五星的吗"), Call({"rating_range_lower": 5}), Result([]), Assistant("没有")],
    "reply without a call": [User("你好"), Assistant("你好！"), User("谢谢"), Assistant("不客气")],
    # U+2028 and U+0085 stay unescaped in JSON text: a reader splitting lines with str.splitlines() cuts the record
    "odd text": [User("line\nbreak \"quoted\" {json?}\u2028\x85"), Assistant("  spaces kept  ")],
}


@pytest.mark.parametrize("fmt", FILE_FORMATS)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases_round_trip(tmp_path, fmt, case):
    dialogue = Dialogue(tuple(EDGE_CASES[case]))
    out = tmp_path / "edge.jsonl"
    write_dialogues([dialogue, dialogue], out, fmt)
    back = read_dialogues(out, fmt)
    # seed_text also checks argument key order and that 300.0 stays a float and 4 an int; the same dialogue twice
    # in a row stays two dialogues (llama2 has to find the boundary between them)
    assert seed_text(back) == seed_text([dialogue, dialogue])


def test_llama2_counts_what_it_cannot_keep(tmp_path):
    custom = HOTEL_TOOL.__class__("find", "d", {"type": "object", "properties": {}})
    ends_with_result = Dialogue((User("a"), Call({"name": "x"}), Result([HOTEL])), tools=(custom,))
    no_target = Dialogue((User("hello?"),))
    out = tmp_path / "lossy.jsonl"
    report = write_dialogues([ends_with_result, no_target], out, "llama2")
    assert report.records == 1
    assert report.counts["turns after the last call or reply (not kept)"] == 1
    assert report.counts["dialogues with no call or reply (not kept)"] == 1
    assert report.counts["dialogues whose tool list is not search_hotels (tools not kept)"] == 1
    assert seed_text(read_dialogues(out)) == seed_text([Dialogue(ends_with_result.turns[:2])])


def test_sharegpt_counts_calls_llama_factory_would_skip(tmp_path):
    report = write_dialogues([Dialogue(tuple(EDGE_CASES["unanswered call, then the user"])),
                              Dialogue(tuple(EDGE_CASES["multi-search"]))], tmp_path / "s.jsonl", "sharegpt")
    assert report.counts == {"dialogues with a call but no observation (LLaMA-Factory would skip them)": 1}


def test_seed_layouts(tmp_path, course_test):
    few = course_test[:3]
    write_dialogues(few, f"{tmp_path}/dir/", "seed")
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["0001.json", "0002.json", "0003.json"]
    assert json.loads((tmp_path / "dir" / "0002.json").read_text(encoding="utf-8")) == dialogue_to_seed(few[1])
    write_dialogues(few[:1], tmp_path / "one.json", "seed")
    write_dialogues(few, tmp_path / "many.json", "seed")
    for path, expected in ((tmp_path / "dir", few), (tmp_path / "one.json", few[:1]), (tmp_path / "many.json", few)):
        assert detect_format(path) == "seed"
        assert seed_text(read_dialogues(path)) == seed_text(expected)
    assert [d.id for d in read_dialogues(tmp_path / "dir")] == ["0001.json", "0002.json", "0003.json"]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_json_document_layout_round_trips(tmp_path, course_test, fmt):
    """A `.json` path holds one JSON document (LLaMA-Factory's usual layout); detection looks at its first item."""
    out = tmp_path / f"few.{fmt}.json"
    write_dialogues(course_test[:3], out, fmt)
    assert isinstance(json.loads(out.read_text(encoding="utf-8")), list)
    assert detect_format(out) == fmt
    assert seed_text(read_dialogues(out)) == seed_text(course_test[:3])


def test_raw_seed_directory_reads_every_file(data_root):
    raw = data_root / "hotel" / "raw" / "enhanced_hotel_data"
    dialogues = read_dialogues(raw)
    names = sorted(p.name for p in raw.glob("*.json"))
    assert [d.id for d in dialogues] == names
    assert all(d.tools == (HOTEL_TOOL,) for d in dialogues)
    named = read_dialogues(data_root / "hotel" / "raw" / "enhanced_more" / "named.json")  # a list of dialogues
    assert len(named) == 120 and all("name" in d.calls[0].arguments for d in named)

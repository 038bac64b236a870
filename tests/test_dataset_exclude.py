"""`data build --exclude`: user sentences of held-out files keep their dialogues out of the build."""

from __future__ import annotations

import json

import pytest

from tooltune.dataset.clean import normalise
from tooltune.dataset.exclude import remove_overlap, user_texts
from tooltune.dataset.items import make_item
from tooltune.cli import main
from tooltune.dialogue import Assistant, Call, User
from tooltune.errors import InputError


def _item(index, text):
    return make_item([User(text), Call({"type": "经济型"}), User("好的谢谢"), Assistant("不客气")], "s", index)


def test_seed_chatglm3_and_llama2_rows_are_read(tmp_path):
    path = tmp_path / "held.jsonl"
    rows = [[{"role": "user", "content": "我想找一家经济型的酒店住宿！"}],
            {"tools": [], "conversations": [{"role": "user", "content": "帮我找个有无烟房的豪华型酒店"}]},
            {"context": json.dumps([{"role": "user", "content": "请推荐一家评分4.5分以上的酒店"}]),
             "response": json.dumps({"role": "assistant", "content": "好"})}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    texts = user_texts([path])
    assert set(texts.values()) == {f"{path}:1", f"{path}:2", f"{path}:3"}
    items = [_item("0", "我想找一家经济型的酒店住宿。"), _item("1", "我想找一家舒适型的酒店住宿"), _item("2", "好的谢谢")]
    kept, removed = remove_overlap(items, texts)
    assert [i.index for i in kept] == ["1", "2"]  # "好的谢谢" is too short to count as a shared sentence
    assert removed[0].reason == "in an excluded file" and f"{path}:1" in removed[0].detail


def test_bad_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('[]\n{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        user_texts([path])
    assert main(["data", "build", "--out", str(tmp_path / "o"), "--exclude", str(tmp_path / "none.jsonl")]) == 2


def test_build_excludes_the_course_test_set(tmp_path, course_dir, data_root):
    out = tmp_path / "o"
    held = course_dir / "test.chatglm3.jsonl"
    assert main(["data", "build", "--out", str(out), "--data-dir", str(data_root), "--no-zips", "--limit", "400",
                 "--no-augment", "--exclude", str(held)]) == 0
    texts = user_texts([held])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| in an excluded file |" in report
    for split in ("train", "dev", "test"):
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line):
                if turn["role"] == "user" and len(normalise(turn["content"])) >= 8:
                    assert normalise(turn["content"]) not in texts


def test_dialog_json_parts_also_in_the_train_zip_are_read_once(tmp_path, data_root):
    """With crosswoz/train.json.zip present, dialog.json (cut from it) must not add its dialogues a second time."""
    from tooltune.dataset.crosswoz import load_crosswoz_zip
    from tooltune.hotels import load_hotels

    hotels = {h["name"]: h for h in load_hotels(data_root / "crosswoz/hotel_db.json")}
    zip_items, _ = load_crosswoz_zip(data_root / "crosswoz/val.json.zip", hotels, "val", limit=30)
    shared = zip_items[0].dialogue.turns[0].content
    root = tmp_path / "data"
    (root / "crosswoz").mkdir(parents=True)
    (root / "hotel/agiclass_hotel_chatbot").mkdir(parents=True)
    (root / "crosswoz/hotel_db.json").symlink_to(data_root / "crosswoz/hotel_db.json")
    (root / "crosswoz/train.json.zip").symlink_to(data_root / "crosswoz/val.json.zip")  # stands in for train
    dialogs = [[{"role": "usr", "content": shared, "dsl": {"type": "经济型"}, "hotels": []},
                {"role": "sys", "content": "没有。"}],
               [{"role": "usr", "content": "一句只在dialog.json里的话，找个经济型酒店", "dsl": {"type": "经济型"},
                 "hotels": []}, {"role": "sys", "content": "没有。"}]]
    (root / "hotel/agiclass_hotel_chatbot/dialog.json").write_text(json.dumps(dialogs, ensure_ascii=False),
                                                                    encoding="utf-8")
    out = tmp_path / "o"
    assert main(["data", "build", "--out", str(out), "--data-dir", str(root), "--no-augment", "--limit", "30"]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| also in crosswoz/train.json.zip | 1 |" in report
    assert "| hotel/agiclass_hotel_chatbot/dialog.json | 0 | also in crosswoz/train.json.zip |" in report

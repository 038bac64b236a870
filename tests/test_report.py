"""Predictions files, scoring a run (course metrics and the views beyond), metrics.json and `tooltune report`."""

import json

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from tooltune.cli import main
from tooltune.dialogue import Assistant, Call, turn_from_seed
from tooltune.errors import InputError
from tooltune.evaluate.predictions import Row, read_predictions, write_predictions
from tooltune.evaluate.report import read_metrics, render_table, table_rows, write_metrics
from tooltune.evaluate.score import hoteldb_search, score, task_success, turn_types, valid_calls


@pytest.fixture(scope="module")
def gold_rows(course_dir):
    """The course's 560 test units as rows predicting their own gold (ids: line numbers)."""
    rows = []
    path = course_dir / "test.llama2.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        gold = turn_from_seed(json.loads(json.loads(line)["response"]), f"{path}:{number}")
        rows.append(Row(f"test:{number}", gold, gold, "raw"))
    return rows


def test_gold_as_prediction_scores_100(gold_rows):
    m = score(gold_rows, rouge=False)
    assert (m["n_calls"], m["n_replies"]) == (242, 318)
    assert m["bleu4"] == pytest.approx(100.0)  # every test reply has at least 4 characters
    assert (m["slot_p"], m["slot_r"], m["slot_f1"]) == pytest.approx((100.0, 100.0, 100.0))
    assert m["valid_calls"]["rate"] == 100.0 and m["valid_calls"]["attempted"] == 242
    assert m["turn_types"] == {"call": {"call": 242, "reply": 0, "unparsable": 0},
                               "reply": {"call": 0, "reply": 318, "unparsable": 0}}


def test_every_reply_replaced_by_ok_gives_the_expected_mean(gold_rows, tmp_path):
    rows = [Row(r.id, r.gold, Assistant("好的") if isinstance(r.gold, Assistant) else r.pred, r.raw)
            for r in gold_rows]
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, rows)
    rescored = score(read_predictions(path), rouge=False)
    # computed here straight from nltk, the course's way, independently of tooltune's metric code
    expected = [sentence_bleu([list(r.gold.content.strip())], list("好的"),
                              smoothing_function=SmoothingFunction().method3)
                for r in gold_rows if isinstance(r.gold, Assistant)]
    assert rescored["bleu4"] == pytest.approx(100 * sum(expected) / len(expected))
    assert 0 < rescored["bleu4"] < 5
    assert rescored["slot_f1"] == pytest.approx(100.0)


def test_predictions_file_round_trip(tmp_path):
    rows = [Row("test:0:1", Call({"type": "舒适型", "price_range_upper": 300}), None, "search: {"),
            Row("test:0:3", Assistant("推荐A。"), Assistant("推荐A。"), "推荐A。")]
    path = tmp_path / "p.jsonl"
    assert write_predictions(path, rows) == 2
    assert read_predictions(path) == rows
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"id": "test:0:1", "gold": {"role": "search", "arguments": {"type": "舒适型",
                     "price_range_upper": 300}}, "pred": None, "raw": "search: {"}
    assert "舒适型" in path.read_text(encoding="utf-8")  # readable, not \\u escapes


GOOD = '{"id": "a", "gold": {"role": "assistant", "content": "x"}, "pred": null, "raw": ""}'


@pytest.mark.parametrize("line, where, field, message", [
    ('{"id": "a", "gold": ', ":2", None, "not valid JSON"),
    ('{"id": "b", "gold": {"role": "assistant", "content": "x"}, "pred": null}', ":2", None, "missing ['raw']"),
    ('{"id": "b", "gold": {"role": "assistant", "content": "x"}, "pred": null, "raw": "", "x": 1}', ":2", None,
     "unknown ['x']"),
    ('{"id": 3, "gold": {"role": "assistant", "content": "x"}, "pred": null, "raw": ""}', ":2", "id", "string"),
    ('{"id": "b", "gold": {"role": "return", "records": []}, "pred": null, "raw": ""}', ":2", "gold.role",
     "search or assistant"),
    ('{"id": "b", "gold": {"role": "assistant", "content": "x"}, "pred": {"role": "bot"}, "raw": ""}', ":2",
     "pred.role", "unknown role"),
    ('{"id": "b", "gold": {"role": "search", "arguments": 5}, "pred": null, "raw": ""}', ":2", "gold.arguments",
     "object"),
    (GOOD, ":2", "id", "already used on line 1"),
])
def test_bad_predictions_are_located(tmp_path, line, where, field, message):
    path = tmp_path / "p.jsonl"
    path.write_text(GOOD + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_predictions(path)
    assert e.value.where == f"{path}{where}" and e.value.field == field
    assert message in e.value.message


def test_empty_or_missing_predictions_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no predictions"):
        read_predictions(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="cannot read"):
        read_predictions(tmp_path / "absent.jsonl")


MIXED = [
    Row("t:0:1", Call({"type": "舒适型", "facilities": ["无烟房"]}), Call({"type": "舒适型", "stars": 5}), ""),
    Row("t:0:3", Call({"price_range_upper": 300}), Call({"price_range_upper": 300.0}), ""),
    Row("t:0:5", Call({"type": "经济型"}), Assistant("好的"), "好的"),
    Row("t:1:1", Call({"type": "经济型"}), None, "search: {"),
    Row("t:1:3", Assistant("推荐A。"), Call({"name": "A"}), ""),
]


def test_beyond_the_course_views():
    assert turn_types(MIXED) == {"call": {"call": 2, "reply": 1, "unparsable": 1},
                                 "reply": {"call": 1, "reply": 0, "unparsable": 0}}
    v = valid_calls(MIXED)
    # attempts: 3 parsed calls + 1 unparsable; the first call has an unknown key
    assert (v["attempted"], v["valid"], v["unparsable"]) == (4, 2, 1)
    assert v["rate"] == 50.0 and v["problems_by_key"] == {"stars": 1}
    by_key = score(MIXED, rouge=False)["slot_by_key"]
    assert list(by_key)[:2] == ["type", "facilities"]  # most gold slots first
    assert by_key["type"]["correct"] == 1 and by_key["type"]["gold"] == 3 and by_key["type"]["predicted"] == 1
    assert by_key["stars"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "correct": 0, "predicted": 1, "gold": 0}


def test_task_success_compares_the_hotels_found():
    hotels = [{"hotel_id": i, "type": t, "price": p} for i, (t, p) in enumerate(
        [("舒适型", 200), ("舒适型", 400), ("经济型", 150), ("经济型", 500)])]

    def search(args, limit):
        if "stars" in args:
            raise InputError("unknown argument", field="stars")
        found = [h for h in hotels if h["type"] == args.get("type", h["type"])
                 and h["price"] <= args.get("price_range_upper", 1e9)]
        return found[:limit]

    rows = [Row("a", Call({"type": "舒适型"}), Call({"type": "舒适型", "price_range_upper": 1000}), ""),  # same
            Row("b", Call({"type": "经济型"}), Call({"price_range_upper": 300}), ""),  # {2,3} vs {0,2}
            Row("c", Call({"type": "经济型"}), Call({"type": "经济型", "stars": 5}), ""),  # rejected
            Row("d", Call({"type": "豪华型"}), Assistant("没有"), ""),  # gold finds nothing; no call
            Row("e", Call({"stars": 1}), Call({"type": "经济型"}), ""),  # gold rejected: not judged
            Row("f", Assistant("x"), Assistant("x"), "")]
    t = task_success(rows, search, limit=3)
    assert t == {"limit": 3, "judged": 4, "success": 1, "rate": 25.0, "gold_found_nothing": 1,
                 "pred_rejected": 1, "gold_rejected": 1}
    assert score(rows, search=search, rouge=False)["task_success"] == t
    with pytest.raises(InputError, match="limit"):
        task_success(rows, search, limit=0)


def test_metrics_json_and_table(tmp_path, gold_rows):
    write_metrics(tmp_path / "gold", gold_rows[:40], {"model": "Gold", "method": "oracle"}, rouge=False)
    half = [Row(r.id, r.gold, None, "") if i % 2 else r for i, r in enumerate(gold_rows[:40])]
    write_metrics(tmp_path / "half", half, {"model": "Qwen2-0.5B", "method": "原生", "mode": "dialogue"})
    runs = [read_metrics(tmp_path / "gold"), read_metrics(tmp_path / "half" / "metrics.json")]
    assert runs[0]["mode"] == "turn" and runs[0]["metrics"]["slot_f1"] == pytest.approx(100.0)
    md = render_table(table_rows(runs), markdown=True).splitlines()
    assert md[0] == "| Model | Method | BLEU-4 | SLOT-P | SLOT-R | SLOT-F1 |"
    assert md[1] == "| --- | --- | ---: | ---: | ---: | ---: |"
    assert md[2] == "| Gold | oracle | 100.00 | 100.00 | 100.00 | 100.00 |"
    assert md[3].startswith("| Qwen2-0.5B | 原生 (dialogue mode) | ")
    extra = render_table(table_rows(runs, extra=True)).splitlines()
    assert extra[0].split() == ["Model", "Method", "BLEU-4", "SLOT-P", "SLOT-R", "SLOT-F1", "VALID-CALL", "TASK-OK",
                                "ROUGE-L(jieba)"]
    assert extra[1].split()[-2:] == ["-", "-"]  # no task success, no ROUGE for the first run
    with pytest.raises(InputError, match="method"):
        write_metrics(tmp_path / "x", gold_rows[:2], {"model": "m"})


def test_report_command(tmp_path, gold_rows, capsys):
    write_metrics(tmp_path / "run", gold_rows[:30], {"model": "M", "method": "LoRA"}, rouge=False)
    assert main(["report", str(tmp_path / "run"), "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| Model | Method | BLEU-4 | SLOT-P | SLOT-R | SLOT-F1 |" and out[2].startswith("| M | LoRA |")
    write_predictions(tmp_path / "p.jsonl", gold_rows[:30])
    assert main(["report", "--rescore", str(tmp_path / "p.jsonl"), "--no-rouge"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"bleu4", "slot_p", "slot_r", "slot_f1"} <= printed.keys()
    assert printed["slot_f1"] == pytest.approx(100.0) and "task_success" not in printed


def test_rescore_with_task_success_on_the_local_database(tmp_path, gold_rows, data_root, capsys, monkeypatch):
    monkeypatch.setenv("TOOLTUNE_DATA", str(data_root))
    calls = [r for r in gold_rows if isinstance(r.gold, Call)][:20]
    write_predictions(tmp_path / "p.jsonl", calls)
    argv = ["report", "--rescore", str(tmp_path / "p.jsonl"), "--no-rouge", "--task-success", "--limit", "1",
            "--db", str(tmp_path / "hotels.sqlite")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task_success"]["limit"] == 1
    assert printed["task_success"]["success"] == printed["task_success"]["judged"] == 20


@pytest.mark.parametrize("argv, message", [
    (["report"], "nothing to report"),
    (["report", "NOWHERE"], "cannot read run metrics"),
    (["report", "--rescore", "NOWHERE.jsonl"], "cannot read predictions"),
])
def test_report_command_errors_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_report_names_the_bad_field(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text('{"model": "m", "method": "x", "metrics": {"bleu4": 1}}')
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.slot_p: missing or not a number" in capsys.readouterr().err


def test_task_success_on_the_local_database(gold_rows, data_root, tmp_path):
    search = hoteldb_search(tmp_path / "hotels.sqlite", data_root)
    calls = [r for r in gold_rows if isinstance(r.gold, Call)]
    gold = task_success(calls, search, limit=3)
    assert gold["judged"] + gold["gold_rejected"] == 242
    assert gold["success"] == gold["judged"] > 200  # the gold call finds its own hotels
    # dropping every call's last argument changes what most searches find
    cut = [Row(r.id, r.gold, Call(dict(list(r.gold.arguments.items())[:-1])), "") for r in calls]
    assert task_success(cut, search, limit=3)["rate"] < 60

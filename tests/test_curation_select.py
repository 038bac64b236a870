"""Active selection, the annotation round trip and k-fold training, end to end on course dialogues and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.dialogue import Call, dialogue_to_seed
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.curation.select import Uncertainty, decision_points, select_top
from tooltune.train.tiny import save_tiny_model

LORA = str(Path(__file__).parents[1] / "configs" / "lora.yaml")
SMALL = ["model.dtype=float32", "train.mixed_precision=no", "data.format=chatglm3", "data.max_length=768",
         "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1", "train.eval_every=0", "train.save_every=0",
         "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def setup(course_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    dev = read_dialogues(course_dir / "dev.chatglm3.jsonl")
    write_dialogues(dev[:4], root / "train.jsonl", "seed")
    # The pool: unchecked dialogues, plus one unlabelled (its user turn only).
    write_dialogues(dev[4:9] + [dev[9].__class__(dev[9].turns[:1])], root / "pool.jsonl", "seed")
    model = save_tiny_model(root / "tiny", vocab_size=300)
    assert main(["train", LORA, f"model.path={model}", f"data.train={root / 'train.jsonl'}", "data.dev=",
                 f"train.out={root / 'run'}", *SMALL]) == 0
    return root, model


def test_decision_points_are_before_each_call_and_at_a_final_user_turn(course_dir):
    d = next(d for d in read_dialogues(course_dir / "dev.chatglm3.jsonl") if len(d.calls) > 1)
    points = decision_points(d)
    assert len(points) == len(d.calls) and all(isinstance(d.turns[len(h)], Call) for h in points)
    unlabelled = d.__class__(d.turns[:1])
    assert decision_points(unlabelled) == [unlabelled.turns]


def test_select_top_orders_by_the_chosen_score_and_breaks_ties_by_pool_order():
    us = [Uncertainty(0, 1, 2.0, 5.0, 0.0), Uncertainty(1, 1, 3.0, 4.0, 0.5), Uncertainty(2, 1, 3.0, 1.0, 0.5)]
    assert [u.index for u in select_top(us, 3, "mean")] == [1, 2, 0]
    assert [u.index for u in select_top(us, 2, "min")] == [0, 1]
    assert [u.index for u in select_top(us, 3, "disagree")] == [1, 2, 0]


def test_select_then_merge_annotations(setup, tmp_path, capsys):
    root, _ = setup
    pool = read_dialogues(root / "pool.jsonl")
    sel, ls, scores = tmp_path / "sel.jsonl", tmp_path / "tasks.json", tmp_path / "scores.jsonl"
    assert main(["data", "select", "--model", str(root / "run"), "--pool", str(root / "pool.jsonl"), "--n", "4",
                 "--out", str(sel), "--label-studio", str(ls), "--scores", str(scores), "--max-new-tokens", "6",
                 "--batch", "b1"]) == 0
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == len(pool) and rows[-1]["points"] == 1  # the unlabelled dialogue is scored at its end
    assert all(r["points"] == len(decision_points(d)) for r, d in zip(rows, pool))
    chosen = sorted(range(len(pool)), key=lambda i: (-rows[i]["mean"], i))[:4]
    selected = read_dialogues(sel)
    assert [dialogue_to_seed(d) for d in selected] == [dialogue_to_seed(pool[i]) for i in chosen]
    tasks = json.loads(ls.read_text(encoding="utf-8"))
    assert [t["data"]["line"] for t in tasks] == [1, 2, 3, 4] and {t["data"]["batch"] for t in tasks} == {"b1"}
    assert json.loads(tasks[0]["data"]["dialogue"]) == dialogue_to_seed(selected[0])

    # A Label Studio export: annotator 7 corrects task 1 and passes it; annotator 8 leaves task 2, it is checked
    # and fails; task 3 is annotated unchanged; task 4 was skipped.
    fixed = dialogue_to_seed(selected[0])
    fixed[0] = {"role": "user", "content": "改过的问题：" + fixed[0]["content"]}
    tasks[0]["annotations"] = [{"completed_by": 7, "result": [
        {"from_name": "dialogue", "type": "textarea", "value": {"text": [json.dumps(fixed, ensure_ascii=False)]}},
        {"from_name": "check", "type": "choices", "value": {"choices": ["pass"]}}]}]
    tasks[1]["annotations"] = [{"completed_by": {"id": 8, "email": "b@x"}, "result": [
        {"from_name": "check", "type": "choices", "value": {"choices": ["fail"]}}]}]
    tasks[2]["annotations"] = [{"completed_by": 7, "result": []}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    merged = tmp_path / "merged.jsonl"
    assert main(["data", "merge-annotations", "--sent", str(sel), "--annotations", str(export), "--out",
                 str(merged), "--max-fail-rate", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "| 7 | 2 | 1 | 50.0% | " in out and "| b@x | 1 | 0 | 0.0% | 0 | 1 | 1 | 100.0% |" in out
    assert "| b1 | 3 | 1 | 33.3% |" in out and "accepted" in out and "tasks without an annotation: 1" in out
    assert [dialogue_to_seed(d) for d in read_dialogues(merged)] == [fixed, dialogue_to_seed(selected[1]),
                                                                      dialogue_to_seed(selected[2])]
    # The same batch with a stricter sample check is sent back: nothing merged.
    assert main(["data", "merge-annotations", "--sent", str(sel), "--annotations", str(export), "--out",
                 str(merged), "--max-fail-rate", "0.2"]) == 0
    assert "rejected: sample check: 1 of 2 failed" in capsys.readouterr().out and merged.read_text() == ""

    # JSONL annotations, per batch; a bad turn is an error naming file:line and field.
    lines = [{"line": 1, "annotator": "ann", "batch": "x", "turns": fixed},
             {"line": 2, "annotator": "ann", "batch": "y", "turns": dialogue_to_seed(selected[1])}]
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    assert main(["data", "merge-annotations", "--sent", str(sel), "--annotations", str(ann), "--out", str(merged),
                 "--max-change-rate", "0.5", "--append-to", str(root / "train.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "rejected: change rate 100% > 50%" in out and "| y | 1 | 0 | 0.0% |" in out
    assert len(read_dialogues(merged)) == 4 + 1
    lines[1]["turns"] = [{"role": "search", "arguments": {}}]
    ann.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    assert main(["data", "merge-annotations", "--sent", str(sel), "--annotations", str(ann), "--out",
                 str(merged)]) == 2
    assert f"{ann}:2" in capsys.readouterr().err


def test_kfold_trains_each_fold_on_stratified_parts(setup, course_dir, tmp_path, capsys):
    _, model = setup
    data = tmp_path / "six.jsonl"
    write_dialogues(read_dialogues(course_dir / "dev.chatglm3.jsonl")[10:16], data, "seed")
    out = tmp_path / "kf"
    assert main(["train", LORA, f"model.path={model}", f"data.train={data}", f"train.out={out}", *SMALL,
                 "--kfold", "2", "--limit", "1"]) == 0
    result = json.loads((out / "kfold.json").read_text())
    assert [f["dev"] for f in result["folds"]] == [3, 3]
    devs = [dialogue_to_seed(d) for i in range(2) for d in read_dialogues(out / f"fold-{i}" / "dev.jsonl")]
    assert sorted(map(json.dumps, devs)) == sorted(json.dumps(dialogue_to_seed(d)) for d in read_dialogues(data))
    losses = [f["dev_loss"] for f in result["folds"]]
    assert result["mean"]["dev_loss"] == pytest.approx(sum(losses) / 2) and all(x > 0 for x in losses)
    assert {"slot_f1", "bleu4"} <= set(result["mean"]) and "mean +- std" in capsys.readouterr().out
    assert main(["train", LORA, f"model.path={model}", f"data.train={data}", "--kfold", "1"]) == 2


def test_select_by_loss_is_the_model_loss_on_each_dialogues_own_turns(setup, tmp_path, capsys):
    """`--by loss` decodes nothing: each pool dialogue's score is the run's mean token loss on its assistant turns,
    rendered as training renders them; here checked against a plain forward pass of the same model."""
    import torch
    import torch.nn.functional as F

    from tooltune.dialogue import with_argument_order
    from tooltune.formats import get_format
    from tooltune.formats.base import IGNORE_INDEX, encode
    from tooltune.runs import load_for_inference

    root, _ = setup
    pool = read_dialogues(root / "pool.jsonl")
    sel, scores = tmp_path / "sel.jsonl", tmp_path / "scores.jsonl"
    assert main(["data", "select", "--model", str(root / "run"), "--pool", str(root / "pool.jsonl"), "--n", "3",
                 "--out", str(sel), "--scores", str(scores), "--by", "loss"]) == 0
    assert "1 without an assistant turn score 0" in capsys.readouterr().out
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    loaded = load_for_inference(root / "run")
    fmt = get_format(loaded.format).for_tokenizer(loaded.tokenizer)
    for row, d in zip(rows, pool):
        total, count = 0.0, 0
        for sample in fmt.render(with_argument_order(d, loaded.argument_order), observation=loaded.observation):
            ex = encode(sample, loaded.tokenizer)
            with torch.no_grad():
                logits = loaded.model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1]
            labels = torch.tensor(ex.labels[1:])
            keep = labels != IGNORE_INDEX
            total += F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum").item()
            count += int(keep.sum())
        assert row["loss"] == (pytest.approx(total / count, rel=1e-4) if count else 0.0)
        assert row["mean"] == row["disagree"] == 0.0  # nothing decoded
    assert rows[-1]["loss"] == 0.0 and min(r["loss"] for r in rows[:-1]) > 0  # the unlabelled one scores 0
    chosen = sorted(range(len(pool)), key=lambda i: (-rows[i]["loss"], i))[:3]
    assert [dialogue_to_seed(d) for d in read_dialogues(sel)] == [dialogue_to_seed(pool[i]) for i in chosen]

    unlabelled = tmp_path / "unlabelled.jsonl"
    write_dialogues(pool[-1:], unlabelled, "seed")
    assert main(["data", "select", "--model", str(root / "run"), "--pool", str(unlabelled), "--n", "1",
                 "--out", str(tmp_path / "none.jsonl"), "--by", "loss"]) == 2
    assert f"{unlabelled}" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()

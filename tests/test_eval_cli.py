"""`tooltune eval` end to end on tiny models: predictions.jsonl has one row per gold turn and re-scores to metrics.json."""

import json
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.evaluate.predictions import ROW_KEYS, read_predictions
from tooltune.evaluate.score import score
from tooltune.files import read_dialogues, write_dialogues
from tooltune.train.tiny import save_tiny_model


@pytest.fixture(scope="module")
def few_dialogues(course_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "few.jsonl"
    write_dialogues(read_dialogues(course_dir / "test.chatglm3.jsonl")[:2], path, "seed")
    return path


def _check_outputs(out, n_units):
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == n_units and all(tuple(r) == ROW_KEYS for r in rows)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rescored = score(read_predictions(out / "predictions.jsonl"))
    for key in ("bleu4", "slot_p", "slot_r", "slot_f1"):
        assert metrics["metrics"][key] == pytest.approx(rescored[key])
    return metrics


def test_eval_a_base_model_and_a_trained_run(tmp_path, few_dialogues, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    n_units = sum(len(d.targets()) for d in read_dialogues(few_dialogues))

    assert main(["eval", str(model_dir), "--data", str(few_dialogues), "--out", str(tmp_path / "native"),
                 "--max-new-tokens", "8", "--no-task-success"]) == 2  # a plain model needs --format
    assert "--format" in capsys.readouterr().err
    assert main(["eval", str(model_dir), "--format", "llama2", "--data", str(few_dialogues), "--out",
                 str(tmp_path / "native"), "--max-new-tokens", "8", "--no-task-success"]) == 0
    metrics = _check_outputs(tmp_path / "native", n_units)
    assert (metrics["method"], metrics["mode"]) == ("native", "turn")

    run = tmp_path / "run"
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "lora.yaml"),
                 f"model.path={model_dir}", "model.dtype=float32", "train.mixed_precision=no", "data.format=chatglm3",
                 f"data.train={few_dialogues}", "data.dev=", "data.max_length=1024", "train.max_steps=1",
                 "train.batch_size=2", "train.grad_accum=1", "train.eval_every=0", "train.save_every=0",
                 "train.warmup_steps=0", f"train.out={run}"]) == 0
    assert main(["eval", str(run), "--data", str(few_dialogues), "--out", str(tmp_path / "lora"), "--limit", "3",
                 "--mode", "turn", "--max-new-tokens", "8"]) == 0
    metrics = _check_outputs(tmp_path / "lora", 3)
    assert (metrics["method"], metrics["format"]) == ("lora", "chatglm3")
    assert "task_success" in metrics["metrics"]

    assert main(["eval", str(run), "--data", str(few_dialogues), "--out", str(tmp_path / "dlg"), "--mode",
                 "dialogue", "--limit", "1", "--max-new-tokens", "8", "--no-task-success"]) == 0
    metrics = _check_outputs(tmp_path / "dlg", len(read_dialogues(few_dialogues)[0].targets()))
    assert metrics["mode"] == "dialogue"


def test_eval_scores_scripted_predictions_to_hand_worked_values(tmp_path, few_dialogues, monkeypatch):
    """The model is replaced by a script: every call is the gold call plus one wrong slot, every reply the gold
    reply. By the course's definitions, slot recall is then 100, precision G / (G + calls) with G the gold slots
    (a list element is one slot), and each reply's character BLEU-4 is 100."""
    from tooltune.dialogue import Assistant, Call
    from tooltune.evaluate.units import eval_units
    from tooltune.formats import ParsedTurn
    from tooltune.inference import Generator, Prediction

    units = eval_units(read_dialogues(few_dialogues), split="few")
    calls = [u.gold for u in units if isinstance(u.gold, Call)]
    replies = [u.gold for u in units if isinstance(u.gold, Assistant)]
    assert calls and replies and all(len(r.content.strip()) >= 4 for r in replies)
    assert all("price_range_upper" not in c.arguments for c in calls)

    def scripted(self, histories, tools=None, progress=False):
        out = []
        assert len(histories) == len(units)
        for history, unit in zip(histories, units):
            assert tuple(history) == unit.history
            gold = unit.gold
            turn = Call({**gold.arguments, "price_range_upper": 1.0}) if isinstance(gold, Call) else gold
            out.append(Prediction(ParsedTurn(turn), "scripted", 1))
        return out

    monkeypatch.setattr(Generator, "predict", scripted)
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    assert main(["eval", str(model_dir), "--format", "llama2", "--data", str(few_dialogues), "--out",
                 str(tmp_path / "scripted"), "--no-task-success"]) == 0
    metrics = _check_outputs(tmp_path / "scripted", len(units))["metrics"]
    gold_slots = sum(len(v) if isinstance(v, list) else 1 for c in calls for v in c.arguments.values())
    precision = 100 * gold_slots / (gold_slots + len(calls))
    assert metrics["slot_r"] == pytest.approx(100.0)
    assert metrics["slot_p"] == pytest.approx(precision)
    assert metrics["slot_f1"] == pytest.approx(2 * precision * 100 / (precision + 100))
    assert metrics["bleu4"] == pytest.approx(100.0)

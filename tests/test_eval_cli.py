"""`tooltune eval` end to end on tiny models: predictions.jsonl has one row per gold turn and re-scores to metrics.json."""

import json
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.evaluate.predictions import ROW_KEYS, read_predictions
from tooltune.evaluate.score import score
from tooltune.datafiles import read_dialogues, write_dialogues
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


def _interrupt_after(monkeypatch, batches):
    """Make generation raise KeyboardInterrupt (a Ctrl-C, or a kill between writes) after `batches` generated
    batches: a fixed batch, or one unit of continuous batching (each is written as it ends)."""
    from tooltune.inference import Generator

    real, calls = Generator._predictions, []

    def predictions(self, *args, **kwargs):
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Generator, "_predictions", predictions)
    return calls


@pytest.mark.parametrize("mode", ["turn", "dialogue"])
def test_an_interrupted_eval_resumes_to_the_same_files(tmp_path, few_dialogues, monkeypatch, capsys, mode):
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    args = ["eval", str(model_dir), "--format", "llama2", "--data", str(few_dialogues), "--max-new-tokens", "6",
            "--batch-size", "2", "--no-task-success", "--mode", mode]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0

    out = tmp_path / "cut"
    # cut after two batches (turn mode), or inside the second dialogue (dialogue mode: one turn per call)
    calls = _interrupt_after(monkeypatch, 2 if mode == "turn" else len(read_dialogues(few_dialogues)[0].targets()) + 1)
    assert main(args + ["--out", str(out)]) == 130
    assert not (out / "predictions.jsonl").exists() and not (out / "metrics.json").exists()
    written = (out / "predictions.partial.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) > 1  # the header and the rows of the batches done before the interruption
    with (out / "predictions.partial.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"id": "cut sho')  # a kill in the middle of a write leaves half a line
    monkeypatch.undo()
    capsys.readouterr()

    assert main(args + ["--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"{len(written) - 1} of " in said and "1 line cut short" in said
    assert not (out / "predictions.partial.jsonl").exists()
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "whole" / "predictions.jsonl").read_bytes()
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text(encoding="utf-8"))
    resumed = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert resumed["metrics"] == whole["metrics"] and resumed["resumed_units"] == len(written) - 1
    assert calls  # generation really was cut and then continued


def test_resume_refuses_other_settings(tmp_path, few_dialogues, monkeypatch, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    args = ["eval", str(model_dir), "--format", "llama2", "--data", str(few_dialogues), "--max-new-tokens", "6",
            "--batch-size", "2", "--no-task-success", "--out", str(tmp_path / "out")]
    _interrupt_after(monkeypatch, 1)
    assert main(args) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*args, "--resume", "--max-new-tokens", "7"]) == 2
    err = capsys.readouterr().err
    assert "predictions.partial.jsonl:1: tooltune_eval.max_new_tokens: --resume needs the same settings" in err


def test_an_output_holding_a_lone_surrogate_is_still_written(tmp_path, few_dialogues, monkeypatch):
    """A decoded output that no UTF-8 file can hold (a lone surrogate) has it replaced and counted, so that
    predictions.jsonl is written after all the generation instead of failing then."""
    from transformers import AutoTokenizer

    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    cls = type(AutoTokenizer.from_pretrained(model_dir))
    real = cls.decode
    monkeypatch.setattr(cls, "decode", lambda self, *a, **k: real(self, *a, **k) + "\udc80")
    out = tmp_path / "out"
    assert main(["eval", str(model_dir), "--format", "llama2", "--data", str(few_dialogues), "--out", str(out),
                 "--max-new-tokens", "4", "--limit", "3", "--no-task-success"]) == 0
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 3 and any(r.raw.endswith("\ufffd") for r in rows)
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["invalid_characters_replaced"] >= 1


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

    def scripted(self, histories, tools=None, progress=False, skip=(), on_batch=None):
        assert not skip
        out = []
        assert len(histories) == len(units)
        for history, unit in zip(histories, units):
            assert tuple(history) == unit.history
            gold = unit.gold
            turn = Call({**gold.arguments, "price_range_upper": 1.0}) if isinstance(gold, Call) else gold
            out.append(Prediction(ParsedTurn(turn), "scripted", 1))
        if on_batch is not None:  # eval writes its rows as batches end
            on_batch(list(range(len(out))), out)
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


@pytest.mark.parametrize("flag, key, batch", [("--no-prefix-reuse", "prefix_reuse", 3),
                                              ("--no-continuous-batching", "continuous_batching", 2)])
def test_eval_without_a_decoding_speed_up_writes_the_same_predictions_and_says_so(tmp_path, course_dir, flag, key,
                                                                                   batch):
    """Prefix reuse (`tooltune.prefix`) and continuous batching (`tooltune.continuous`) change only the time."""
    data = tmp_path / "few.jsonl"
    write_dialogues(read_dialogues(course_dir / "dev.chatglm3.jsonl")[:3], data, "seed")
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    outs = {}
    for flags in ([], [flag]):
        out = tmp_path / ("without" if flags else "with")
        assert main(["eval", str(model_dir), "--format", "llama2", "--data", str(data), "--out", str(out),
                     "--max-new-tokens", "8", "--batch-size", str(batch), "--no-task-success", *flags]) == 0
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["decoding"] == {"kind": "greedy", "prefix_reuse": True, "continuous_batching": True,
                                       key: not flags}
        outs[bool(flags)] = (out / "predictions.jsonl").read_text(encoding="utf-8")
    assert outs[True] == outs[False]

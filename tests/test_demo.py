"""`tooltune demo` end to end at the smallest sensible size: every stage runs, writes its folder, and a re-run resumes."""

import json
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.demo import (
    LECTURE_ROWS,
    OWN_GPT2,
    PYPI,
    Budget,
    DemoConfig,
    finetune_tree,
    run_demo,
    table,
)
from tooltune.train.config import RunConfig, build_dataclass, load_config
from vocab_support import outside, record_generation, rendered_ids, run_vocabulary

# A tiny GPT-2 on a small corpus, two steps of each training, three test units; the rules row is tested apart.
TINY = Budget(build_limit=5, corpus_documents=150, vocab_size=300, n_layer=2, n_embd=32, n_head=2, context=1280,
              pretrain_steps=2, finetune_steps=2, eval_limit=3, max_new_tokens=8, rules=False, task_success=False)


def test_demo_end_to_end_then_resumes(tmp_path, data_root):
    out = tmp_path / "demo"
    said = []
    run = run_demo(DemoConfig(out=out, data_dir=str(data_root), base=OWN_GPT2, budget=TINY), say=said.append)

    assert run == out / "run" and (run / "run.json").is_file()
    assert {p.name for p in out.iterdir()} == {"data", "base", "run", "eval"}
    assert (out / "data" / "train.jsonl").is_file() and (out / "data" / "corpus.txt").is_file()
    assert len((out / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()) <= TINY.corpus_documents
    assert json.loads((out / "base" / "tooltune-gpt2" / "config.json").read_text())["n_positions"] == TINY.context
    assert json.loads((run / "run.json").read_text())["steps"] == TINY.finetune_steps
    rows = (out / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert len(rows) == TINY.eval_limit == metrics["units"]
    assert (metrics["model"], metrics["method"], metrics["mode"]) == ("tooltune-gpt2", "full", "turn")
    text = "\n".join(said)
    assert "ChatGLM3-6B (lecture)" in text and "QLoRA" in text
    assert f"tooltune chat {run}" in text
    assert not any("skipped" in line for line in said)

    # A re-run finds every stage done and prints the same table without training again.
    again = []
    run_demo(DemoConfig(out=out, data_dir=str(data_root), base=OWN_GPT2, budget=TINY), say=again.append)
    assert sum("skipped" in line for line in again) == 4
    assert table(out / "eval", None) in "\n".join(again)


def test_demo_on_a_local_model_folder_trains_lora_and_evaluates_with_the_domain_vocabulary(tmp_path, data_root,
                                                                                           monkeypatch):
    """The PyPI-base path (what `--base gemma3-270m` does after preparing the model), on a tiny local model."""
    from dataclasses import replace

    from tooltune.train.tiny import save_tiny_model

    base = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    out = tmp_path / "demo"
    generated = record_generation(monkeypatch)
    run = run_demo(DemoConfig(out=out, data_dir=str(data_root), base=str(base),
                              budget=replace(TINY, domain_vocab=True)), say=lambda s: None)
    assert (out / "base" / "tiny").resolve() == base.resolve()
    config = (run / "config.yaml").read_text(encoding="utf-8")
    assert "name: lora" in config and "all-linear" in config
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["model"], metrics["method"], metrics["units"]) == ("tiny", "lora", TINY.eval_limit)
    assert metrics["output_vocab"].endswith("ids of the training data + the prompt's")
    # Generated: only ids of the run's training file, of the row's own prompt, or eos (see vocab_support).
    allowed, tok = run_vocabulary(run)
    assert len(generated) == TINY.eval_limit and any(new for _, new in generated)
    assert not any(outside(generated, allowed | {tok.eos_token_id}))


def test_an_interrupted_stage_is_redone_and_a_foreign_folder_refused(tmp_path, data_root, monkeypatch):
    from tooltune import demo

    out = tmp_path / "demo"
    (out / "data.partial").mkdir(parents=True)
    (out / "data.partial" / "half.jsonl").write_text("{", encoding="utf-8")
    calls = []

    def fake_data(cfg, partial):  # stands in for the build: this test is about the stage bookkeeping
        calls.append(partial)
        partial.mkdir()
        (partial / "corpus.txt").write_text("x\n", encoding="utf-8")

    monkeypatch.setattr(demo, "stage_data", fake_data)
    monkeypatch.setattr(demo, "stage_base", lambda cfg, data, partial: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        run_demo(DemoConfig(out=out, data_dir=str(data_root), base=OWN_GPT2, budget=TINY), say=lambda s: None)
    assert calls == [out / "data.partial"] and (out / "data" / "corpus.txt").is_file()
    assert not (out / "data" / "half.jsonl").exists()

    (out / "base").mkdir()  # a folder without its marker is not taken for a finished stage
    assert main(["demo", "--out", str(out), "--data-dir", str(data_root)]) == 2


def test_table_puts_the_lecture_rules_and_demo_rows_in_order(tmp_path):
    from tooltune.dialogue import Assistant
    from tooltune.evaluate.predictions import Row
    from tooltune.evaluate.report import write_metrics

    rows = [Row("test:0:1", Assistant("好的"), Assistant("好的"), "好的")]
    write_metrics(tmp_path / "rules", rows, {"model": "rules + retrieval", "method": "none (no network)"})
    write_metrics(tmp_path / "eval", rows, {"model": "gpt2", "method": "full"})
    lines = table(tmp_path / "eval", tmp_path / "rules", markdown=True).splitlines()
    assert lines[0].startswith("| Model | Method | BLEU-4")
    assert [line.split(" | ")[1] for line in lines[2:]] == [*(r[1] for r in LECTURE_ROWS), "none (no network)", "full"]
    assert "| 54.57 | 93.53 | 92.93 | 93.23 |" in lines[2]


def test_configs_demo_yaml_matches_the_demo(tmp_path):
    """configs/demo.yaml is the demo's fine-tuning, for running it by hand: the two must not drift apart."""
    path = Path(__file__).parents[1] / "configs" / "demo.yaml"
    by_hand = load_config(path, [f"model.path={tmp_path}", f"train.out={tmp_path / 'run'}"])
    tree = finetune_tree(tmp_path, tmp_path / "run", Path("../shared/data"), PYPI, method="lora", own=False)
    ours = build_dataclass(RunConfig, tree, "")
    assert by_hand.method == ours.method and by_hand.model == ours.model
    for key in ("format", "observation", "max_length", "argument_order", "call_weight"):
        assert getattr(by_hand.data, key) == getattr(ours.data, key), key
    for key in ("lr", "batch_size", "grad_accum", "max_steps", "warmup_steps", "schedule", "mixed_precision",
                "weight_decay", "output_vocab", "cache_frozen"):
        assert getattr(by_hand.train, key) == getattr(ours.train, key), key


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--finetune-steps", "-1"]])
def test_cli_refuses_bad_numbers(tmp_path, argv, capsys):
    assert main(["demo", "--out", str(tmp_path), *argv]) == 2
    assert "must be a positive number" in capsys.readouterr().err


def test_an_untrained_model_folder_is_evaluated_with_the_vocabulary_of_a_given_training_file(tmp_path, data_root,
                                                                                          monkeypatch):
    """The lecture's native row (bench/quality.py): a plain model has no run to take its domain vocabulary from."""
    from dataclasses import replace

    from tooltune import paths
    from tooltune.demo import evaluate
    from tooltune.errors import InputError
    from tooltune.train.tiny import save_tiny_model

    base = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    split = data_root / paths.COURSE_SPLIT
    budget = replace(TINY, domain_vocab=True, eval_limit=2)
    with pytest.raises(InputError, match="data.train"):
        evaluate(base, split / "test.chatglm3.jsonl", tmp_path / "none", budget, str(data_root), format="llama2")
    generated = record_generation(monkeypatch)
    metrics = evaluate(base, split / "test.chatglm3.jsonl", tmp_path / "native", budget, str(data_root),
                       format="llama2", observation="compact", train_file=split / "train.chatglm3.jsonl")
    assert metrics["units"] == 2 and metrics["output_vocab"].endswith("ids of the training data + the prompt's")
    assert len((tmp_path / "native" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    # Generated: only ids of the given training file (rendered as evaluated: llama2, compact), the prompt's, or eos.
    from transformers import AutoTokenizer

    from tooltune.datafiles import read_dialogues

    tok = AutoTokenizer.from_pretrained(base)
    allowed = rendered_ids(read_dialogues(split / "train.chatglm3.jsonl"), tok, "llama2", "compact")
    assert len(generated) == 2 and any(new for _, new in generated)
    assert not any(outside(generated, allowed | {tok.eos_token_id}))

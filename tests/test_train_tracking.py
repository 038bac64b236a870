"""`train.report_to=tensorboard`: the loop's curves reach TensorBoard through accelerate's tracker, read back here
with TensorBoard's own event reader and compared with the run's log.jsonl."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from tooltune import rundir
from tooltune.errors import InputError
from tooltune.train.config import config_from_dict
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer


def test_tensorboard_gets_loss_lr_grad_norm_throughput_and_dev_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra (pip install -e '.[tensorboard]'; "
                                              ".ci/run installs it)")
    from tensorboard.backend.event_processing import event_accumulator

    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    out = tmp_path / "run"
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora"},
                            "train": {"out": str(out), "max_steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2,
                                      "eval_every": 2, "report_to": "tensorboard"}})
    run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer,
                 synthetic_examples(16, len(tokenizer), seed=1), synthetic_examples(4, len(tokenizer), seed=2))

    log = [json.loads(line) for line in (out / rundir.LOG).read_text().splitlines()]
    events = event_accumulator.EventAccumulator(str(out / rundir.TENSORBOARD))
    events.Reload()

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    steps = [e for e in log if "loss" in e]
    assert [s for s, _ in scalars("train/loss")] == [e["step"] for e in steps] == [1, 2, 3, 4]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/tokens_per_s", "tokens_per_s")):
        assert [v for _, v in scalars(tag)] == pytest.approx([e[key] for e in steps], rel=1e-6), tag
    # The lr of the next step, as log.jsonl has it: warm-up to 1e-2 over 2 steps, then cosine to 0 at step 4.
    assert [v for _, v in scalars("train/lr")] == pytest.approx([1e-2, 1e-2, 5e-3, 0.0], rel=1e-6, abs=1e-9)
    devs = [e for e in log if "dev_loss" in e]
    assert [s for s, _ in scalars("dev/loss")] == [e["step"] for e in devs] == [2, 4]
    assert [v for _, v in scalars("dev/loss")] == pytest.approx([e["dev_loss"] for e in devs], rel=1e-6)
    assert [v for _, v in scalars("dev/perplexity")] == pytest.approx([e["dev_perplexity"] for e in devs], rel=1e-6)


def test_no_tracker_by_default_and_an_unknown_one_is_refused(tmp_path):
    assert config_from_dict({}).train.report_to == "none"
    with pytest.raises(InputError, match="train.report_to"):
        config_from_dict({"train": {"report_to": "comet"}})


def test_a_tracker_that_is_not_installed_is_refused_with_what_to_install(monkeypatch):
    from tooltune.errors import ToolTuneError
    from tooltune.train import tracking

    monkeypatch.setitem(tracking.INSTALLED, "wandb", lambda: False)
    with pytest.raises(ToolTuneError, match="pip install wandb"):
        tracking.accelerator_kwargs(config_from_dict({"train": {"report_to": "wandb"}}))
    assert tracking.accelerator_kwargs(config_from_dict({})) == {}

"""An interrupted run resumed from its checkpoint ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tooltune.errors import ToolTuneError
from tooltune.train.config import config_from_dict
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer


def _cfg(model_dir, out):
    # Dropout 0.3 makes the result depend on the restored RNG; 10 examples in batches of 3 with accumulation 2 give
    # 2 steps per epoch, so 6 steps cross two epoch boundaries and the checkpoint at step 2 sits at one.
    return config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora", "dropout": 0.3},
                             "train": {"out": str(out), "max_steps": 6, "batch_size": 3, "grad_accum": 2, "lr": 5e-3,
                                       "warmup_steps": 2, "save_every": 2, "eval_every": 3, "seed": 7}})


def _run(cfg, model_dir, tokenizer, **kw):
    train = synthetic_examples(10, len(tokenizer), seed=5)
    dev = synthetic_examples(4, len(tokenizer), seed=6)
    return run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, train, dev, **kw)


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_resumed_run_ends_with_the_same_loss_and_weights(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    whole = _run(_cfg(model_dir, tmp_path / "whole"), model_dir, tokenizer)

    cut = _cfg(model_dir, tmp_path / "cut")
    interrupted = _run(cut, model_dir, tokenizer, stop_after=3)
    assert interrupted.summary["interrupted_at"] == 3
    assert not (tmp_path / "cut" / "run.json").exists()
    resumed = _run(cut, model_dir, tokenizer, resume=True)

    assert resumed.summary["final_train_loss"] == whole.summary["final_train_loss"]
    assert resumed.summary["best_dev_loss"] == whole.summary["best_dev_loss"]
    strip = lambda log: [{k: v for k, v in e.items() if "per_s" not in k} for e in log]  # noqa: E731
    assert strip(_log(tmp_path / "cut")) == strip(_log(tmp_path / "whole"))
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    for name, p in a.items():
        assert torch.equal(p, b[name]), name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    with pytest.raises(ToolTuneError, match="no checkpoint"):
        _run(_cfg(model_dir, tmp_path / "none"), model_dir, tiny_tokenizer(), resume=True)

"""An interrupted run resumed from its checkpoint ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tooltune.errors import ToolTuneError
from tooltune.train import checkpoint
from tooltune.train.config import config_from_dict, config_to_dict
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


def _record_steps(monkeypatch):
    """Each optimizer step's starting trainable weights, in order: what the loop really computed from."""
    from tooltune.train import loop

    starts = []
    real = loop.train_step

    def recording(accelerator, loss_module, *args, **kwargs):
        model = accelerator.unwrap_model(loss_module).model
        starts.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return real(accelerator, loss_module, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording)
    return starts


def test_resumed_run_ends_with_the_same_loss_and_weights(tmp_path, monkeypatch):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    steps = _record_steps(monkeypatch)
    whole = _run(_cfg(model_dir, tmp_path / "whole"), model_dir, tokenizer)
    whole_starts = list(steps)
    assert len(whole_starts) == 6

    cut = _cfg(model_dir, tmp_path / "cut")
    interrupted = _run(cut, model_dir, tokenizer, stop_after=3)
    assert interrupted.summary["interrupted_at"] == 3
    assert not (tmp_path / "cut" / "run.json").exists()
    steps.clear()
    resumed = _run(cut, model_dir, tokenizer, resume=True)
    # The newest checkpoint is step 2 (save_every=2): the resumed run takes steps 3..6 only, starting from the
    # weights the uninterrupted run had after step 2 (a resume that restored nothing would start from step 0's).
    assert len(steps) == 4
    for got, want in zip(steps, whole_starts[2:]):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[n], want[n]) for n in want)
    assert any(not torch.equal(whole_starts[2][n], whole_starts[0][n]) for n in whole_starts[0])

    assert resumed.summary["final_train_loss"] == whole.summary["final_train_loss"]
    assert resumed.summary["best_dev_loss"] == whole.summary["best_dev_loss"]
    strip = lambda log: [{k: v for k, v in e.items() if "per_s" not in k and k not in ("elapsed_s", "tokens", "trained_tokens")} for e in log]  # noqa: E731
    assert strip(_log(tmp_path / "cut")) == strip(_log(tmp_path / "whole"))
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    for name, p in a.items():
        assert torch.equal(p, b[name]), name
    # With dev data the saved adapter is the best dev loss's, so the last step's weights are kept as a checkpoint.
    assert checkpoint.latest(tmp_path / "whole") == tmp_path / "whole" / "checkpoints" / "step-6"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    with pytest.raises(ToolTuneError, match="no checkpoint"):
        _run(_cfg(model_dir, tmp_path / "none"), model_dir, tiny_tokenizer(), resume=True)


def test_runs_are_not_mixed(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    cfg = _cfg(model_dir, tmp_path / "run")
    _run(cfg, model_dir, tokenizer, stop_after=2)
    with pytest.raises(ToolTuneError, match="holds checkpoints of an earlier run"):
        _run(cfg, model_dir, tokenizer)
    changed = config_from_dict({**config_to_dict(cfg), "train": {**config_to_dict(cfg)["train"], "lr": 1e-3}})
    with pytest.raises(ToolTuneError, match="differs .* in train.lr"):
        _run(changed, model_dir, tokenizer, resume=True)


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tooltune.train import loop

    dev_losses = iter([3.0, 2.0, 2.5, 2.6, 1.0])  # best at the 2nd evaluation, then 2 worse ones
    at_eval = []  # the trainable weights at each evaluation

    def fake_evaluate(accelerator, loss_module, *a, **k):
        model = accelerator.unwrap_model(loss_module).model
        at_eval.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return next(dev_losses)

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    model_dir = save_tiny_model(tmp_path / "model")
    tree = config_to_dict(_cfg(model_dir, tmp_path / "run"))
    tree["train"].update(max_steps=5, grad_accum=1, eval_every=1, early_stopping=2, save_every=0)
    result = _run(config_from_dict(tree), model_dir, tiny_tokenizer())
    assert result.summary["stopped_early"] and result.summary["steps"] == 4
    assert result.summary["best_dev_loss"] == 2.0
    evals = [e["step"] for e in _log(tmp_path / "run") if "dev_loss" in e]
    assert evals == [1, 2, 3, 4]
    # On disk: the adapter of the 2nd evaluation (the best), not of the last (step 4) or the first.
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert len(at_eval) == 4 and saved

    def matches(weights):
        by_suffix = {n.replace(".default", ""): p for n, p in weights.items()}
        return all(torch.equal(value, by_suffix[name]) for name, value in saved.items())

    assert [matches(w) for w in at_eval] == [False, True, False, False]


def test_resume_skips_an_incomplete_checkpoint_and_says_so(tmp_path, capsys):
    """A kill while `progress.json` was written (by a version without atomic saves, or a damaged disk) leaves a
    truncated file: --resume takes the checkpoint before it, says which it skipped, and still ends exactly."""
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    whole = _run(_cfg(model_dir, tmp_path / "whole"), model_dir, tokenizer)
    cut = _cfg(model_dir, tmp_path / "cut")
    _run(cut, model_dir, tokenizer, stop_after=5)  # checkpoints at steps 2 and 4
    newest = tmp_path / "cut" / "checkpoints" / "step-4"
    text = (newest / "progress.json").read_text(encoding="utf-8")
    (newest / "progress.json").write_text(text[:len(text) // 2], encoding="utf-8")
    capsys.readouterr()

    resumed = _run(cut, model_dir, tokenizer, resume=True)
    said = capsys.readouterr()
    assert "skipping checkpoint" in said.err and "step-4" in said.err and "progress.json is unreadable" in said.err
    assert "step-2 (step 2)" in said.out
    assert resumed.summary["final_train_loss"] == whole.summary["final_train_loss"]


def test_a_save_cut_short_leaves_no_checkpoint_to_resume_from(tmp_path, monkeypatch):
    """Checkpoints are written to a temporary directory renamed at the end: an error (a kill, a full disk) in the
    middle of a save leaves the earlier checkpoints as the newest complete ones."""

    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    real = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if str(path).endswith("state.pt") and ".step-4.tmp" in str(path):
            raise OSError("No space left on device")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        _run(_cfg(model_dir, tmp_path / "run"), model_dir, tokenizer, stop_after=5)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not (checkpoints / "step-4").exists() and (checkpoints / ".step-4.tmp").is_dir()
    assert checkpoint.latest(tmp_path / "run") == checkpoints / "step-2"
    assert checkpoint.incomplete(checkpoints / ".step-4.tmp") == "no progress.json"


def test_max_minutes_ends_the_run_at_the_step_that_reaches_it_and_saves(tmp_path, monkeypatch):
    """train.max_minutes: the step during which the cap is reached is the last one, evaluated and saved like the
    planned last step; run.json says where and why it stopped. A cap of a few nanoseconds is reached at step 1."""
    from safetensors.torch import load_file

    from tooltune.train import loop

    at_eval = []

    def fake_evaluate(accelerator, loss_module, *a, **k):
        model = accelerator.unwrap_model(loss_module).model
        at_eval.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return 1.0

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    model_dir = save_tiny_model(tmp_path / "model")
    tree = config_to_dict(_cfg(model_dir, tmp_path / "run"))
    tree["train"].update(max_steps=6, grad_accum=1, eval_every=0, save_every=0, max_minutes=1e-9)
    result = _run(config_from_dict(tree), model_dir, tiny_tokenizer())
    assert result.summary["steps"] == 1
    assert result.summary["stopped_for_time"] == {"step": 1, "epoch": 0, "minutes": 1e-9}
    assert [e["step"] for e in _log(tmp_path / "run") if "dev_loss" in e] == [1]
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")
    by_suffix = {n.replace(".default", ""): p for n, p in at_eval[0].items()}
    assert saved and all(torch.equal(value, by_suffix[name]) for name, value in saved.items())
    # Without a cap the same configuration runs every planned step.
    tree["train"].update(max_minutes=0, out=str(tmp_path / "uncapped"))
    uncapped = _run(config_from_dict(tree), model_dir, tiny_tokenizer())
    assert uncapped.summary["steps"] == 6 and "stopped_for_time" not in uncapped.summary


def test_a_run_cut_by_max_minutes_keeps_a_checkpoint_and_resumes_to_the_uncut_weights(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    whole = _run(_cfg(model_dir, tmp_path / "whole"), model_dir, tokenizer)
    tree = config_to_dict(_cfg(model_dir, tmp_path / "cut"))
    tree["train"]["max_minutes"] = 1e-9  # reached at step 1, between the save_every=2 checkpoints
    cut = _run(config_from_dict(tree), model_dir, tokenizer)
    assert cut.summary["steps"] == 1 and (tmp_path / "cut" / "checkpoints" / "step-1" / "trainable.pt").is_file()
    tree["train"]["max_minutes"] = 0
    resumed = _run(config_from_dict(tree), model_dir, tokenizer, resume=True)
    assert resumed.summary["steps"] == 6
    mine = dict(resumed.model.named_parameters())
    for name, value in whole.model.named_parameters():
        if value.requires_grad:
            torch.testing.assert_close(mine[name], value, rtol=0, atol=1e-6)


def test_max_minutes_must_not_be_negative():
    from tooltune.train.config import TrainConfig

    with pytest.raises(Exception, match="train.max_minutes"):
        TrainConfig(max_minutes=-1)

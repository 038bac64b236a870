"""`tooltune export RUN --merge OUT`: the merged model's logits equal the adapter's; what cannot merge is refused."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from tooltune.cli import main
from tooltune.train.config import config_from_dict, config_to_dict
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_merged_export_logits_equal_the_adapters(tmp_path, name):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": name},
                            "train": {"out": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 2e-2}})
    result = run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer,
                          synthetic_examples(8, len(tokenizer)), [])
    assert main(["export", str(tmp_path / "run"), "--merge", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    adapter = result.model.eval()
    ids = torch.tensor([[4, 19, 77, 3, 120, 56, 9]])
    with torch.no_grad():
        want, got, untouched = adapter(input_ids=ids).logits, merged(input_ids=ids).logits, base(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(untouched, want, atol=1e-3)  # the adapter did change the model
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


@pytest.mark.parametrize("name, reason", [("qlora", "4-bit"), ("prefix", "virtual tokens"),
                                          ("prompt", "virtual tokens")])
def test_export_refuses_what_cannot_merge(tmp_path, capsys, name, reason):
    run = tmp_path / "run"
    run.mkdir()
    tree = config_to_dict(config_from_dict({"method": {"name": name}}))
    (run / "config.yaml").write_text(yaml.safe_dump(tree))
    assert main(["export", str(run), "--merge", str(tmp_path / "out")]) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_becomes_a_run_with_the_weights_of_that_step(tmp_path, monkeypatch, capsys):
    """`export RUN --checkpoint 2 --out DIR`: DIR loads like a run, with the adapter as it was after step 2 (recorded
    from the loop itself, not read back from the checkpoint), not the final one."""
    from peft import PeftModel

    from tooltune.train import loop

    after = {}
    real = loop.train_step

    def recording(accelerator, loss_module, *args, **kwargs):
        model = accelerator.unwrap_model(loss_module).model
        after[len(after)] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return real(accelerator, loss_module, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording)
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora", "dropout": 0.0},
                            "train": {"out": str(tmp_path / "run"), "max_steps": 4, "batch_size": 4, "lr": 2e-2,
                                      "save_every": 2}})
    final = run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer,
                         synthetic_examples(8, len(tokenizer)), []).model
    assert main(["export", str(tmp_path / "run"), "--checkpoint", "2", "--out", str(tmp_path / "at2")]) == 0
    at2 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "at2").eval()
    got = {n: p for n, p in at2.named_parameters() if "lora_" in n}
    assert got and got.keys() == after[2].keys()  # after[2]: the weights step 3 started from
    assert all(torch.equal(got[n], after[2][n]) for n in got)
    ids = torch.tensor([[4, 19, 77, 3, 120, 56, 9]])
    with torch.no_grad():
        assert not torch.allclose(at2(input_ids=ids).logits, final.eval()(input_ids=ids).logits, atol=1e-4)
    assert yaml.safe_load((tmp_path / "at2" / "config.yaml").read_text()) == \
        yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert '"saved": "checkpoint step-2"' in (tmp_path / "at2" / "run.json").read_text()
    # No such step; a full run's checkpoint is no adapter; --out is needed.
    assert main(["export", str(tmp_path / "run"), "--checkpoint", "3", "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint at step 3 (it has: step-2)" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--checkpoint", "2"]) == 2
    assert "--checkpoint needs --out" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

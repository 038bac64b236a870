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

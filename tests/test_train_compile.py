"""`train.compile`: every decoder block compiled in place, one graph for all of them; the training is the same."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch._dynamo.utils import counters
from transformers import AutoModelForCausalLM

from tooltune.errors import ToolTuneError
from tooltune.train.config import config_from_dict
from tooltune.train.loop import compile_blocks, run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer


def test_compiled_blocks_train_like_eager_ones_and_save_the_same_adapter(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    examples = synthetic_examples(12, len(tokenizer), seed=1)
    runs = {}
    for compiled in (False, True):
        cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora", "dropout": 0.0},
                                "train": {"out": str(tmp_path / f"run-{compiled}"), "max_steps": 3, "batch_size": 4,
                                          "lr": 1e-2, "compile": compiled}})
        torch._dynamo.reset()
        counters.clear()
        result = run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, examples, [])
        runs[compiled] = (result, dict(counters["stats"]), dict(counters["graph_break"]))
    (eager, eager_stats, _), (compiled, stats, breaks) = runs[False], runs[True]
    assert (eager.summary["compiled_blocks"], compiled.summary["compiled_blocks"]) == (0, 2)  # the tiny Llama's 2
    assert not eager_stats.get("unique_graphs")
    assert stats["unique_graphs"] >= 1 and not breaks  # the blocks ran compiled, whole
    assert compiled.summary["final_train_loss"] == pytest.approx(eager.summary["final_train_loss"], rel=1e-5)
    want = load_file(tmp_path / "run-False" / "adapter_model.safetensors")
    got = load_file(tmp_path / "run-True" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6)


def test_compile_refuses_a_model_without_named_blocks():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ToolTuneError, match="no repeated blocks.*train.compile=false"):
        compile_blocks(model)

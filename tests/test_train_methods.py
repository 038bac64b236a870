"""Every method of the table on a tiny in-process model: only adapter parameters train, every one of them changes,
save + load gives identical logits; AdaLoRA really reallocates ranks; what cannot run is refused with the reason."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from tooltune.errors import ToolTuneError
from tooltune.train import methods
from tooltune.train.config import config_from_dict
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer

ADAPTER = re.compile(r"lora_|prompt_encoder")
RUNNABLE = [name for name, m in methods.METHODS.items() if not m.quantized]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    return directory, tiny_tokenizer()


def _train(tiny, tmp_path, method: dict, steps=2, snapshot=None):
    model_dir, tokenizer = tiny
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": method,
                            "train": {"out": str(tmp_path / "run"), "max_steps": steps, "batch_size": 4, "lr": 1e-2,
                                      "warmup_steps": 0, "schedule": "constant"}})
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    examples = synthetic_examples(8, len(tokenizer), seed=3)
    return cfg, run_training(cfg, base, tokenizer, examples, [], on_start=snapshot)


def _load(cfg, model_dir):
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    if cfg.method.name == "full":
        return AutoModelForCausalLM.from_pretrained(cfg.train.out)
    from peft import PeftModel
    return PeftModel.from_pretrained(base, cfg.train.out)


@pytest.mark.parametrize("name", RUNNABLE)
def test_method_trains_only_its_parameters_and_saves_loadably(tiny, tmp_path, name):
    before = {}
    cfg, result = _train(tiny, tmp_path, {"name": name, "num_virtual_tokens": 4, "tinit": 1, "tfinal": 0},
                         snapshot=lambda m: before.update({n: p.detach().clone() for n, p in m.named_parameters()}))
    model = result.model
    params = dict(model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    assert trained
    if name != "full":
        assert all(ADAPTER.search(n) for n in trained), sorted(n for n in trained if not ADAPTER.search(n))[:3]
    for n, p in params.items():
        changed = not torch.equal(p.detach(), before[n])
        assert changed == (n in trained), f"{n}: changed={changed}, trainable={n in trained}"

    model.eval()
    loaded = _load(cfg, tiny[0]).eval()
    ids = torch.tensor([[5, 17, 33, 8, 90, 41]])
    with torch.no_grad():
        # AdaLoRA reloads its matrices cut to the learned rank pattern: same values, another summation order.
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-6, rtol=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["method"] == name and run["steps"] == 2


def test_adalora_reallocates_ranks_and_logs_the_budget(tiny, tmp_path):
    cfg, result = _train(tiny, tmp_path, {"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 1,
                                          "delta_t": 1}, steps=6)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ranks = [e["adalora_total_rank"] for e in log]
    budgets = [e["adalora_budget"] for e in log]
    modules = len(methods.adalora_ranks(result.model))  # q_proj and v_proj in 2 layers
    assert modules == 4
    assert ranks[0] == 6 * modules  # warm-up: nothing pruned yet
    assert ranks[-1] == 2 * modules and ranks[-1] < ranks[0]  # pruned down to the target budget
    assert budgets[0] > budgets[-1] == 2 * modules


def test_qlora_without_bitsandbytes_is_refused_with_the_reason():
    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and CUDA are here: QLoRA can run")
    with pytest.raises(ToolTuneError, match="bitsandbytes|CUDA"):
        methods.check_supported("qlora", gradient_checkpointing=False)


def test_prefix_with_gradient_checkpointing_is_refused():
    with pytest.raises(ToolTuneError, match="past_key_values.*gradient_checkpointing=false"):
        methods.check_supported("prefix", gradient_checkpointing=True)
    methods.check_supported("lora", gradient_checkpointing=True)  # allowed


def test_lora_with_gradient_checkpointing_trains(tiny, tmp_path):
    _, result = _train(tiny, tmp_path, {"name": "lora"}, steps=2)
    cfg2 = config_from_dict({"model": {"path": str(tiny[0]), "gradient_checkpointing": True}, "method": {"name": "lora"},
                             "train": {"out": str(tmp_path / "gc"), "max_steps": 2, "batch_size": 4, "lr": 1e-2,
                                       "schedule": "constant"}})
    base = AutoModelForCausalLM.from_pretrained(tiny[0])
    gc = run_training(cfg2, base, tiny[1], synthetic_examples(8, len(tiny[1]), seed=3), [])
    assert gc.model.get_base_model().is_gradient_checkpointing
    # Recomputation changes no number: the same losses as without checkpointing (dropout 0.05 uses the same RNG).
    assert gc.summary["final_train_loss"] == pytest.approx(result.summary["final_train_loss"], abs=1e-5)

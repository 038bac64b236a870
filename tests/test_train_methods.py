"""Every method of the table on a tiny in-process model: only adapter parameters train, every one of them changes,
save + load gives identical logits; AdaLoRA really reallocates ranks; what cannot run is refused with the reason."""

from __future__ import annotations

import importlib.metadata
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


def test_qlora_without_bitsandbytes_is_refused_with_the_reason(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ToolTuneError, match=r"needs bitsandbytes.*tooltune\[qlora\]"):
        methods.check_supported("qlora", gradient_checkpointing=False)


def test_qlora_on_a_cpu_needs_a_bitsandbytes_with_cpu_kernels(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.45.1")
    with pytest.raises(ToolTuneError, match=r"without a CUDA GPU needs bitsandbytes>=0\.50.*0\.45\.1 is installed"):
        methods.check_supported("qlora", gradient_checkpointing=False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.50.2")
    methods.check_supported("qlora", gradient_checkpointing=False)
    assert methods.load_kwargs("qlora", torch.float32)["device_map"] == {"": "cpu"}


def qlora_runs_here() -> bool:
    """Whether this machine can run QLoRA (bitsandbytes, >=0.50 without CUDA); test_peft_generate.py asks too."""
    try:
        methods.check_supported("qlora", gradient_checkpointing=False)
    except ToolTuneError:
        return False
    return True


@pytest.mark.skipif(not qlora_runs_here(), reason="needs bitsandbytes (>=0.50 without CUDA)")
def test_qlora_trains_adapters_on_a_4bit_base_and_inference_loads_that_base(tmp_path, monkeypatch):
    import bitsandbytes as bnb

    from tooltune.runs import load_for_inference

    model_dir = save_tiny_model(tmp_path / "tiny", hidden=128)  # 4-bit blocks need multiples of 64
    tokenizer = tiny_tokenizer()
    cfg = config_from_dict({"model": {"path": str(model_dir), "dtype": "float32"},
                            "method": {"name": "qlora", "dropout": 0.0},
                            "data": {"format": "llama2"},
                            "train": {"out": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 1e-2,
                                      "warmup_steps": 0, "schedule": "constant", "eval_every": 1, "log_every": 1}})
    base = AutoModelForCausalLM.from_pretrained(model_dir, **methods.load_kwargs("qlora", torch.float32))
    before = {}
    # A dev evaluation after every step: an eval-mode forward must not cost the 4-bit layers their backward.
    result = run_training(cfg, base, tokenizer, synthetic_examples(8, len(tokenizer), seed=3),
                          synthetic_examples(4, len(tokenizer), seed=4),
                          on_start=lambda m: before.update({n: p.detach().clone() for n, p in m.named_parameters()}))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "grad_norm" in e]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(e["grad_norm"] > 0 for e in steps), steps
    model = result.model.eval()
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert all(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert isinstance(methods.make_optimizer("qlora", [torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0),
                      bnb.optim.PagedAdamW)

    # `tooltune eval`/`chat` load the run onto the same 4-bit base: 4-bit layers where bitsandbytes has a fused kernel
    # for them (a GPU; a CPU with AVX512-BF16), else its NF4 weights decoded once into plain layers (a 4-bit matmul
    # would dequantise again at every decoding step). Either way the logits are the trained model's.
    import tooltune.runs

    ids = torch.tensor([[5, 17, 33, 8, 90, 41]])
    with torch.no_grad():
        want = model(input_ids=ids).logits.float()
        plain = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=ids).logits.float()
    assert not torch.allclose(plain, want, atol=1e-2)  # the adapter and the 4-bit base both count
    trained_q = model.get_base_model().model.layers[0].mlp.up_proj.weight
    nf4 = bnb.functional.dequantize_4bit(trained_q.data, trained_q.quant_state).float()
    for kernel in (True, False):
        monkeypatch.setattr(tooltune.runs, "cpu_4bit_kernel", lambda m, kernel=kernel: kernel)
        loaded = load_for_inference(tmp_path / "run", device="cpu")
        assert loaded.method == "qlora"
        assert any(type(m).__name__ == "Linear4bit" for m in loaded.model.modules()) == kernel
        if not kernel:
            assert torch.equal(loaded.model.get_base_model().model.layers[0].mlp.up_proj.weight, nf4)
        with torch.no_grad():
            got = loaded.model(input_ids=ids).logits.float()[..., :want.shape[-1]]
        assert torch.allclose(got, want, atol=1e-2), kernel  # bf16 4-bit kernels: the same weights, other rounding


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

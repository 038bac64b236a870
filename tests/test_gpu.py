"""What only a CUDA machine can check (skipped elsewhere; `bench/gpu.sh` runs this file): QLoRA trains in bf16 on
the GPU and saves loadably (its CPU path is in test_train_methods.py), the FSDP config of configs/accelerate/ runs
the same `tooltune train` command, and generation (constrained, domain vocabulary) works with the model on the GPU,
where `load_for_inference` puts it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from tooltune.train import methods
from tooltune.train.config import config_from_dict
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # 4-bit blocks need inner dimensions that are multiples of 64.
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny-gpu"), hidden=128)
    return directory, tiny_tokenizer()


@cuda
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_trains_only_adapters_in_4bit_and_reloads(tiny, tmp_path):
    model_dir, tokenizer = tiny
    cfg = config_from_dict({"model": {"path": str(model_dir), "dtype": "bfloat16"}, "method": {"name": "qlora"},
                            "train": {"out": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 1e-2,
                                      "schedule": "constant", "mixed_precision": "bf16"}})
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                **methods.load_kwargs("qlora", torch.bfloat16))
    before = {}
    result = run_training(cfg, base, tokenizer, synthetic_examples(8, len(tokenizer), seed=3), [],
                          on_start=lambda m: before.update({n: p.detach().clone() for n, p in m.named_parameters()}))
    model = result.model
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert "lora_" in n and not torch.equal(p.detach(), before[n]), n
    from peft import PeftModel
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                             **methods.load_kwargs("qlora", torch.bfloat16)), cfg.train.out)
    ids = torch.tensor([[5, 17, 33, 8, 90, 41]], device=model.device)
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits.float(),
                              reloaded.eval()(input_ids=ids).logits.float(), atol=1e-2)


@cuda
@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp_config_runs_the_train_command(tiny, tmp_path, method):
    model_dir, _ = tiny
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in synthetic_examples(16, 200, seed=1)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(model_dir)}, "method": {"name": method},
        "data": {"train": str(tmp_path / "train.jsonl")},
        "train": {"out": str(tmp_path / "out"), "max_steps": 3, "batch_size": 4, "lr": 1e-3, "mixed_precision": "bf16"}}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/fsdp.yaml"), "--num_processes", str(torch.cuda.device_count()),
           "-m", "tooltune", "train", str(config)]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["distributed_type"] == "FSDP" and run["steps"] == 3


@cuda
@pytest.mark.parametrize("name", ["llama2", "chat_template"])
def test_constrained_calls_are_valid_with_the_model_on_the_gpu(name):
    # The grammar's token mask is built on the CPU; the scores it masks live where the model is.
    pytest.importorskip("llguidance", reason="the 'constrained' extra (llguidance) is not installed")
    from test_constrained import generator, histories

    from tooltune.dialogue import HOTEL_TOOL, Call
    from tooltune.schema import argument_problems

    gen = generator(name, constrained=True, opening=True)
    gen.model.to("cuda")
    preds = gen.predict(histories())
    for p in preds:
        assert isinstance(p.parsed.turn, Call) and not p.parsed.malformed, p.raw
        assert argument_problems(HOTEL_TOOL, p.parsed.turn.arguments) == [], p.raw


@cuda
def test_domain_vocab_generation_on_the_gpu_matches_the_cpu():
    from formats_support import tiny_dialogue

    from tooltune.formats import get_format
    from tooltune.inference import GenerationConfig, Generator, domain_vocab
    from tooltune.train.tiny import tiny_llama

    tokenizer = tiny_tokenizer()
    fmt = get_format("llama2")
    model = tiny_llama(len(tokenizer))
    vocab = domain_vocab([tiny_dialogue()], tokenizer, fmt, "compact", "as-written")
    config = GenerationConfig(max_new_tokens=16, batch_size=4, output_vocab=vocab)
    histories = [list(tiny_dialogue().turns)[:1]] * 3
    on_cpu = [p.raw for p in Generator(model, tokenizer, fmt, config=config).predict(histories)]
    on_gpu = [p.raw for p in Generator(model.to("cuda"), tokenizer, fmt, config=config).predict(histories)]
    assert on_gpu == on_cpu

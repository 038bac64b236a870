"""Guard against a silent generate() regression: for every method of the table, greedy `generate()` must equal a greedy
decode by plain forward passes (argmax, re-running the full sequence each step).

transformers 5.24.0 with peft 0.21.2 breaks this for Prompt Tuning, P-Tuning and Prefix Tuning (the prefix is dropped,
or the virtual tokens are inserted again at every step); 5.23.0 is right. Adapters are random and non-zero, so a
dropped adapter changes the tokens.
"""

from __future__ import annotations

import pytest
import torch
from test_train_methods import qlora_runs_here
from transformers import AutoModelForCausalLM

from tooltune.train import methods
from tooltune.train.config import MethodConfig
from tooltune.train.tiny import tiny_llama

VOCAB, EOS, NEW_TOKENS = 96, 2, 8


def _base(name: str, tmp_path):
    if not methods.METHODS[name].quantized:
        return tiny_llama(VOCAB, hidden=32, seed=1, initializer_range=0.3)  # varied tokens, not one repeated
    # QLoRA: the same kind of model, loaded in 4 bits (blocks of 64 need a hidden size of 64)
    tiny_llama(VOCAB, hidden=64, seed=1, initializer_range=0.3).save_pretrained(tmp_path / "tiny")
    return AutoModelForCausalLM.from_pretrained(tmp_path / "tiny", **methods.load_kwargs(name, torch.float32))


def _wrapped(name: str, tmp_path):
    model = _base(name, tmp_path)
    if methods.METHODS[name].peft_config is None:
        return model.eval()
    model = methods.wrap(model, MethodConfig(name=name, num_virtual_tokens=4, dropout=0.0, tinit=1, tfinal=1),
                         total_steps=10)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # LoRA's B and AdaLoRA's E start at zero: make every adapter count
                p.normal_(0, 0.5)
    return model.eval()


@torch.no_grad()
def _argmax_decode(model, prompt: torch.Tensor) -> list[int]:
    seq = prompt
    for _ in range(NEW_TOKENS):
        nxt = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        if int(nxt) == EOS:
            break
    return seq[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_greedy_generate_equals_argmax_forward_decode(name, tmp_path):
    if methods.METHODS[name].quantized and not qlora_runs_here():
        pytest.skip("qlora needs bitsandbytes (>=0.50 without CUDA)")
    model = _wrapped(name, tmp_path)
    prompt = torch.tensor([[5, 40, 11, 73, 28, 60]])
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                             do_sample=False, eos_token_id=EOS, pad_token_id=0)
    generated = out[0, prompt.shape[1]:].tolist()
    if EOS in generated:
        generated = generated[:generated.index(EOS) + 1]
    expected = _argmax_decode(model, prompt)
    assert generated == expected
    assert len(set(expected)) > 1 or len(expected) < NEW_TOKENS  # a real sequence, not one repeated token
    if methods.METHODS[name].peft_config is not None:
        # The adapter changes the tokens, so a generate() that dropped it could not pass.
        base = _base(name, tmp_path / "again").eval()
        assert _argmax_decode(base, prompt) != expected

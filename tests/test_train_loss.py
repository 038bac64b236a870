"""The trained-positions-only loss equals the plain `model(input_ids, labels=...)` loss, with the same gradients,
and gradient accumulation normalises by the trained tokens of the whole optimizer step."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from accelerate import Accelerator

from tooltune.train.config import MethodConfig
from tooltune.formats.packing import collate
from tooltune.train.loop import train_step
from tooltune.train.loss import TokenLoss
from tooltune.train import methods
from tooltune.train.tiny import synthetic_examples, tiny_llama

VOCAB = 120


def _batch(n=4, seed=0):
    return collate(synthetic_examples(n, VOCAB, seed=seed, min_len=6, max_len=20), pad_id=0)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_loss_and_grads(model, plain: bool, extra=lambda model: 0.0):
    batch = _batch()
    reference = copy.deepcopy(model)
    s, n = TokenLoss(model, plain=plain)(**batch)
    (s / n + extra(model)).backward()
    expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
    expected.backward()
    got_loss = (s / n + extra(model)).detach()
    assert torch.allclose(got_loss, expected.detach(), atol=1e-6), (float(got_loss), float(expected))
    got, want = _grads(model), _grads(reference)
    assert got.keys() == want.keys() and got
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6, rtol=1e-4), name


def test_fast_loss_matches_plain_loss_and_gradients_full_model():
    _assert_same_loss_and_grads(tiny_llama(VOCAB), plain=False)


@pytest.mark.parametrize("name", ["lora", "dora", "adalora"])
def test_fast_loss_matches_plain_loss_through_peft_wrappers(name):
    model = methods.wrap(tiny_llama(VOCAB), MethodConfig(name=name, dropout=0.0, tinit=1, tfinal=1), total_steps=10)
    for p in model.parameters():  # non-zero adapters, so the adapter path really contributes
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    # peft adds AdaLoRA's orthogonality regulariser only when labels are passed; the loop adds ours (the same one).
    extra = (lambda m: 0.5 * methods.orthogonal_regulariser(m)) if name == "adalora" else (lambda m: 0.0)
    _assert_same_loss_and_grads(model, plain=False, extra=extra)


def test_fast_loss_applies_gemma_final_logit_softcapping():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=3.0,
                              sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    model = Gemma3ForCausalLM(config)
    _assert_same_loss_and_grads(model, plain=False)


def test_plain_path_of_prompt_tuning_scores_only_the_input_positions():
    model = methods.wrap(tiny_llama(VOCAB), MethodConfig(name="prompt", num_virtual_tokens=3), total_steps=1)
    _assert_same_loss_and_grads(model, plain=True)


def test_accumulated_step_is_sum_over_tokens_not_mean_of_means():
    """Two micro-batches with different trained-token counts: the step's gradient must equal the gradient of the
    token-mean loss over all their examples at once."""
    model = tiny_llama(VOCAB)
    reference = copy.deepcopy(model)
    short = synthetic_examples(3, VOCAB, seed=1, min_len=6, max_len=8)
    long = synthetic_examples(2, VOCAB, seed=2, min_len=30, max_len=40)
    accelerator = Accelerator()
    loss, trained, _ = train_step(accelerator, TokenLoss(model, plain=False), [short, long], 0, None)
    whole = collate(short + long, 0)
    expected = reference(**whole).loss
    expected.backward()
    assert trained == sum(e.trained_tokens for e in short + long)
    assert loss == pytest.approx(expected.item(), abs=1e-5)
    got, want = _grads(model), _grads(reference)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6, rtol=1e-4), name
    # A mean of the two micro-batch means would differ: the check above can fail.
    means = [reference(**collate(mb, 0)).loss for mb in (short, long)]
    assert abs(float(sum(means) / 2) - float(expected)) > 1e-3


class ScaledHead(type(tiny_llama(VOCAB))):  # like Cohere's logit_scale: forward scales what the head gives
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 3.0
        if out.loss is not None:
            raise AssertionError("the check computes the loss itself")
        return out


def test_a_model_whose_head_does_more_falls_back_to_the_plain_path():
    from tooltune.train.loss import fast_path_agrees

    plain_model = tiny_llama(VOCAB)
    scaled = ScaledHead(plain_model.config)
    scaled.load_state_dict(plain_model.state_dict())
    batch = _batch()
    assert fast_path_agrees(TokenLoss(plain_model, plain=False), batch)[0]
    ok, fast, plain = fast_path_agrees(TokenLoss(scaled, plain=False), batch)
    assert not ok and abs(fast - plain) > 1e-2


def _first_step_loss(model, tmp_path, examples):
    """Train `model` (method full) one step on all of `examples` at once; returns (logged loss, summary)."""
    import json

    from tooltune.train.config import config_from_dict
    from tooltune.train.loop import run_training
    from tooltune.train.tiny import tiny_tokenizer

    cfg = config_from_dict({"model": {"path": "unused"}, "method": {"name": "full"},
                            "train": {"out": str(tmp_path), "max_steps": 1, "batch_size": len(examples),
                                      "grad_accum": 1, "lr": 1e-3, "warmup_steps": 0, "save_every": 0,
                                      "eval_every": 0, "seed": 0}})
    result = run_training(cfg, model, tiny_tokenizer(), examples, [])
    [entry] = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    return entry["loss"], result.summary


def _hand_loss(logits, batch):
    """Cross-entropy of the shifted labels, averaged over trained tokens, written out here."""
    targets = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    keep = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return float(-(picked * keep).sum() / keep.sum())


def test_training_a_model_whose_head_does_more_runs_the_plain_path(tmp_path):
    """The fallback in a real run: loss_path says so, and the logged loss is the scaled model's own loss (the
    trained-positions path, which skips the scaling, would give the unscaled one)."""
    examples = synthetic_examples(4, VOCAB, seed=3, min_len=6, max_len=20)
    batch = collate(examples, 0)
    plain_model = tiny_llama(VOCAB)
    scaled = ScaledHead(plain_model.config)
    scaled.load_state_dict(plain_model.state_dict())
    with torch.no_grad():
        want_plain = _hand_loss(plain_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch)
        want_scaled = _hand_loss(scaled(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch)
    assert abs(want_scaled - want_plain) > 0.1  # the two paths are told apart

    loss, summary = _first_step_loss(plain_model, tmp_path / "plain", examples)
    assert summary["loss_path"] == "trained positions only"
    assert loss == pytest.approx(want_plain, abs=1e-5)

    loss, summary = _first_step_loss(scaled, tmp_path / "scaled", examples)
    assert summary["loss_path"].startswith("full logits (trained-positions loss")
    assert loss == pytest.approx(want_scaled, abs=1e-5)
    run = json.loads((tmp_path / "scaled" / "run.json").read_text())
    assert run["loss_path"] == summary["loss_path"]


# ---- train.skip_padding_mask: right-padded batches run without their attention mask ----------------------------------

def _tiny_gemma3(seed=0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    # A 4-token window on the sliding layer: the batch's rows (6-20 tokens) are longer, so the window really cuts.
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(config)


def _masks_seen(module, batch):
    seen = []
    base = module.model.model
    handle = base.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    try:
        module(**batch)
    finally:
        handle.remove()
    return seen


def test_right_padded_batch_runs_without_its_mask_left_padded_keeps_it():
    module = TokenLoss(_tiny_gemma3(), plain=False)
    batch = _batch()
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    assert _masks_seen(module, batch) == [None]
    left = {**batch, "attention_mask": batch["attention_mask"].flip(1)}  # zeros first: not collate's padding
    assert _masks_seen(module, left)[0] is left["attention_mask"]
    module.skip_padding_mask = False
    assert _masks_seen(module, batch)[0] is batch["attention_mask"]


@pytest.mark.parametrize("weighted", [False, True])
def test_skipping_the_padding_mask_keeps_loss_and_gradients(weighted):
    """Gemma-3 with a sliding window shorter than the rows, grouped KV heads and a LoRA adapter, float32: the loss
    and every gradient are those of the masked forward."""
    model = methods.wrap(_tiny_gemma3(), MethodConfig(name="lora", dropout=0.0, target_modules=("all-linear",)),
                         total_steps=1)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    batch = _batch()
    if weighted:
        batch["weights"] = torch.rand(batch["labels"].shape) * batch["attention_mask"]
    results = []
    for skip in (True, False):
        copy_ = copy.deepcopy(model)
        s, n = TokenLoss(copy_, plain=False, skip_padding_mask=skip)(**batch)
        (s / n).backward()
        results.append((float(s / n), _grads(copy_)))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(loss_a - loss_b) < 1e-6, (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5), name


def test_padding_mask_probe_keeps_the_mask_for_a_model_that_reads_it():
    from tooltune.train.loss import padding_mask_agrees

    module = TokenLoss(_tiny_gemma3(), plain=False)
    batch = _batch()
    ok, without, with_mask = padding_mask_agrees(module, batch, pad_id=0)
    assert ok and abs(without - with_mask) < 1e-6

    def shift_positions(m, args, kwargs):  # a model that counts positions otherwise without a mask
        if kwargs.get("attention_mask") is None:
            kwargs["position_ids"] = 3 * torch.arange(kwargs["input_ids"].shape[1])[None]
        return args, kwargs

    module.model.model.register_forward_pre_hook(shift_positions, with_kwargs=True)
    ok, without, with_mask = padding_mask_agrees(module, batch, pad_id=0)
    assert not ok and abs(without - with_mask) > 1e-3
    assert module.skip_padding_mask and module.training  # the probe restores the module's state

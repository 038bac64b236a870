"""Adapters on the top K layers (method.layers), the frozen bottom's cache (train.cache_frozen), and the loss over the
training data's vocabulary (train.output_vocab=domain)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tooltune.errors import InputError, ToolTuneError
from tooltune.train.config import config_from_dict
from tooltune.formats.packing import collate
from tooltune.train.frozen import decoder_layers, parse_layers
from tooltune.train.loop import output_vocab, run_training
from tooltune.train.loss import TokenLoss, head_logits
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer


def _cfg(out, **train):
    # 4 layers, adapters on the top 2; 10 examples in batches of 3: 4 steps per epoch (the last batch holds 1), so
    # 8 steps are exactly 2 epochs and every example is seen twice.
    return config_from_dict({"method": {"name": "lora", "dropout": 0.3, "layers": "top:2",
                                        "target_modules": ["q_proj", "v_proj", "down_proj"]},
                             "train": {"out": str(out), "max_steps": 8, "batch_size": 3, "lr": 5e-3, "warmup_steps": 1,
                                       "eval_every": 4, "seed": 3, **train}})


def _run(cfg, model_dir, tokenizer, **kw):
    train = synthetic_examples(10, len(tokenizer), seed=5)
    dev = synthetic_examples(4, len(tokenizer), seed=6)
    return run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tokenizer, train,
                        dev, **kw)


def _losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(e["step"], e.get("loss"), e.get("dev_loss")) for e in lines]


def _assert_same_losses(run_a, run_b):
    """The two runs logged the same steps, with training and dev losses equal to 1e-6."""
    for (step, loss, dev), (step2, loss2, dev2) in zip(_losses(run_a), _losses(run_b), strict=True):
        assert step == step2
        assert (loss is None) == (loss2 is None) and (loss is None or abs(loss - loss2) < 1e-6)
        assert (dev is None) == (dev2 is None) and (dev is None or abs(dev - dev2) < 1e-6)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("frozen") / "model", layers=4)


def test_layers_spec_is_checked():
    assert parse_layers("all") is None and parse_layers("top:3") == 3
    for bad in ("top:0", "top", "bottom:2", "3"):
        with pytest.raises(InputError, match="method.layers"):
            parse_layers(bad)
    with pytest.raises(InputError, match="method.layers"):
        config_from_dict({"method": {"name": "prompt", "layers": "top:2"}})
    with pytest.raises(InputError, match="train.cache_frozen"):
        config_from_dict({"train": {"cache_frozen": True}})
    with pytest.raises(InputError, match="train.output_vocab"):
        config_from_dict({"train": {"output_vocab": "some"}})


def test_top_k_adapts_only_the_top_layers_and_the_backward_stops_there(tmp_path, model_dir):
    tokenizer = tiny_tokenizer()
    seen = {"bottom_backward": 0, "top_backward": 0}

    def on_start(model):
        layers = decoder_layers(model)
        layers[1].register_full_backward_hook(lambda *a: seen.__setitem__("bottom_backward", seen["bottom_backward"] + 1))
        layers[2].register_full_backward_hook(lambda *a: seen.__setitem__("top_backward", seen["top_backward"] + 1))

    result = _run(_cfg(tmp_path / "run", max_steps=2, eval_every=0), model_dir, tokenizer, on_start=on_start)
    adapted = {name.split(".layers.")[1].split(".")[0] for name, p in result.model.named_parameters()
               if p.requires_grad}
    assert adapted == {"2", "3"}
    assert seen["top_backward"] > 0 and seen["bottom_backward"] == 0
    assert result.summary["frozen_layers"] == 2 and result.summary["adapted_layers"] == "top:2"


def test_cached_bottom_trains_exactly_as_the_uncached_run(tmp_path, model_dir):
    tokenizer = tiny_tokenizer()
    calls = {"n": 0}

    def count_bottom(model):
        # the attention inside layer 0 runs only when the layer really computes
        decoder_layers(model)[0].self_attn.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))

    plain = _run(_cfg(tmp_path / "plain"), model_dir, tokenizer)
    cached = _run(_cfg(tmp_path / "cached", cache_frozen=True), model_dir, tokenizer, on_start=count_bottom)

    _assert_same_losses(tmp_path / "plain", tmp_path / "cached")
    a, b = dict(plain.model.named_parameters()), dict(cached.model.named_parameters())
    for name, p in a.items():
        if p.requires_grad:
            assert torch.allclose(p, b[name], atol=1e-6, rtol=0), name
    # the saved adapters agree too
    from safetensors.torch import load_file
    saved_a = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    saved_b = load_file(tmp_path / "cached" / "adapter_model.safetensors")
    assert saved_a.keys() == saved_b.keys()
    for key in saved_a:
        assert torch.allclose(saved_a[key], saved_b[key], atol=1e-6, rtol=0), key
    summary = cached.summary
    # epoch 1: 4 train batches + 2 dev batches computed; epoch 2: 4 train batches + the dev batches served
    assert summary["frozen_cache_misses"] == 6 and summary["frozen_cache_hits"] == 6
    assert summary["frozen_cache_bytes"] == sum(len(e.input_ids) for e in synthetic_examples(10, len(tokenizer), seed=5)
                                                + synthetic_examples(4, len(tokenizer), seed=6)) * 32 * 4
    # layer 0 ran for the loss-path and padding-mask probes (two forwards each) and the 6 computed batches only:
    # served batches skip it
    assert calls["n"] == 2 + 2 + 6


def test_cached_run_resumes_to_the_same_weights(tmp_path, model_dir):
    tokenizer = tiny_tokenizer()
    whole = _run(_cfg(tmp_path / "whole", cache_frozen=True, save_every=2), model_dir, tokenizer)
    cfg = _cfg(tmp_path / "cut", cache_frozen=True, save_every=2)
    _run(cfg, model_dir, tokenizer, stop_after=6)  # in the second epoch, the cache full
    resumed = _run(cfg, model_dir, tokenizer, resume=True)  # a new process: the cache starts empty
    assert abs(resumed.summary["final_train_loss"] - whole.summary["final_train_loss"]) < 1e-6
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    for name, p in a.items():
        if p.requires_grad:
            assert torch.allclose(p, b[name], atol=1e-6, rtol=0), name


def test_cache_is_refused_where_trained_rows_feed_the_frozen_layers(tmp_path, model_dir):
    with pytest.raises(ToolTuneError, match="special-token rows"):
        _run(_cfg(tmp_path / "run", cache_frozen=True), model_dir, tiny_tokenizer(), new_token_ids=[5])


def _domain_module(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, TokenLoss(model, plain=False, vocab=ids)


def test_domain_vocab_loss_is_the_softmax_over_those_rows(model_dir):
    tokenizer = tiny_tokenizer()
    examples = synthetic_examples(6, len(tokenizer), seed=1)
    ids = output_vocab(examples[:4])  # the last two hold targets outside it
    model, module = _domain_module(model_dir, ids)
    batch = collate(examples, tokenizer.pad_token_id)
    loss_sum, count = module(**batch)
    # by hand: the whole head's logits, the vocabulary's columns, targets renumbered in it
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    total, n = 0.0, 0
    for b in range(len(examples)):
        for t in range(targets.shape[1]):
            target = int(targets[b, t])
            if target == -100 or target not in ids:
                continue
            logits = head_logits(model, hidden[b, t][None])[0, ids]
            total += float(-F.log_softmax(logits, -1)[ids.index(target)])
            n += 1
    assert int(count) == n and n < int((targets != -100).sum())  # the outside targets are left out
    assert abs(float(loss_sum) - total) < 1e-4


def test_domain_vocab_trains_the_token_rows_peft_trains(tmp_path, model_dir):
    """peft's trained token rows (tied to the head) get their gradient through the restricted head."""
    from peft import LoraConfig, get_peft_model

    tokenizer = tiny_tokenizer()
    examples = synthetic_examples(4, len(tokenizer), seed=2)
    ids = output_vocab(examples)
    row = ids[3]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj"], trainable_token_indices=[row]))
    module = TokenLoss(peft_model, plain=False, vocab=ids)
    loss_sum, _ = module(**collate(examples, tokenizer.pad_token_id))
    loss_sum.backward()
    delta = next(p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n)
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    # the same rows as peft's own head computes
    full = TokenLoss(peft_model, plain=False)
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = peft_model.get_base_model().model(input_ids=batch["input_ids"],
                                                   attention_mask=batch["attention_mask"]).last_hidden_state[0, :3]
        from tooltune.train.loss import head_rows
        restricted = hidden @ head_rows(peft_model.get_base_model(), torch.tensor(ids)).T
        whole = head_logits(peft_model.get_base_model(), hidden)[:, ids]
    assert torch.allclose(restricted, whole, atol=1e-5)
    assert full.vocab is None


def test_domain_vocab_run_records_its_size(tmp_path, model_dir):
    tokenizer = tiny_tokenizer()
    result = _run(_cfg(tmp_path / "run", max_steps=2, eval_every=0, output_vocab="domain"), model_dir, tokenizer)
    train = synthetic_examples(10, len(tokenizer), seed=5)
    assert result.summary["output_vocab"] == len(output_vocab(train)) < len(tokenizer)
    assert result.summary["loss_path"] == "trained positions only"


def test_top_k_covering_every_layer_adapts_them_all(tmp_path, model_dir):
    cfg = config_from_dict({"method": {"name": "lora", "layers": "top:8", "target_modules": ["q_proj"]},
                            "train": {"out": str(tmp_path / "run"), "max_steps": 1, "cache_frozen": True}})
    result = _run(cfg, model_dir, tiny_tokenizer())
    adapted = {name.split(".layers.")[1].split(".")[0] for name, p in result.model.named_parameters()
               if p.requires_grad}
    assert adapted == {"0", "1", "2", "3"} and result.summary["frozen_layers"] == 0


def test_a_top_k_adapter_loads_for_inference_as_trained(tmp_path, model_dir):
    from peft import PeftModel

    tokenizer = tiny_tokenizer()
    result = _run(_cfg(tmp_path / "run", max_steps=3, eval_every=0, save_every=0), model_dir, tokenizer)
    trained = result.model.eval()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                       tmp_path / "run").eval()
    ids = torch.tensor([synthetic_examples(1, len(tokenizer), seed=9)[0].input_ids])
    with torch.no_grad():
        assert torch.allclose(trained(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and all(".layers.2." in n or ".layers.3." in n for n, _ in loaded.named_parameters() if "lora_" in n)
    assert any(p.abs().sum() > 0 for p in lora_b)  # the trained adapter, not a fresh one


def test_a_run_without_the_padding_mask_trains_as_one_with_it(tmp_path, model_dir):
    """train.skip_padding_mask (the default) against the masked forward: the same losses, dev losses and adapter
    (float32), and run.json says which ran."""
    tokenizer = tiny_tokenizer()
    skipped = _run(_cfg(tmp_path / "skipped"), model_dir, tokenizer)
    masked = _run(_cfg(tmp_path / "masked", skip_padding_mask=False), model_dir, tokenizer)
    _assert_same_losses(tmp_path / "skipped", tmp_path / "masked")
    a, b = dict(skipped.model.named_parameters()), dict(masked.model.named_parameters())
    # The two attention kernels round differently (1e-7), and Adam's steps carry that into the weights a little.
    for name, p in a.items():
        if p.requires_grad:
            assert (p - b[name]).abs().max() < 1e-5, (name, float((p - b[name]).abs().max()))
    info = [json.loads((tmp_path / name / "run.json").read_text())["padding_mask"] for name in ("skipped", "masked")]
    assert info[0].startswith("skipped") and info[1] == "kept"

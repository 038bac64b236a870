"""Packing: packed and unpacked logits agree on tiny Llama and GPT-2 models; batches; padding waste."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from formats_support import byte_bpe, corpus, seed_dialogues
from tooltune.formats import FORMATS, IGNORE_INDEX, Example, encode_all
from tooltune.formats.packing import (GroupByLengthSampler, collate, length_grouped_batches, pack,
                                      packed_attention_mask, padding_waste, random_batches)


@pytest.fixture(scope="module")
def examples(data_root: Path):
    dialogues = seed_dialogues(data_root, limit=40)
    tok = byte_bpe(corpus(dialogues), vocab_size=400)
    samples = [s for d in dialogues for s in FORMATS["llama2"].render(d, observation="compact")]
    report = encode_all(samples, tok, max_length=256)
    assert report.examples and not report.dropped or all("max_length" in why for _, why in report.dropped)
    return report.examples, tok


def tiny_model(kind: str, attn: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             attn_implementation=attn)
        return LlamaForCausalLM(config).eval()
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=512, attn_implementation=attn,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def _unpacked_logits(model, examples, members):
    with torch.no_grad():
        return [model(input_ids=torch.tensor([examples[i].input_ids])).logits[0] for i in members]


def _members(examples, row):
    """Which examples a row holds, in order (pack is deterministic: recover them by matching token runs)."""
    out, at = [], 0
    ids = row.input_ids
    while at < len(ids):
        i = next(k for k, ex in enumerate(examples) if ids[at:at + len(ex.input_ids)] == ex.input_ids
                 and (at + len(ex.input_ids) == len(ids) or row.position_ids[at + len(ex.input_ids)] == 0))
        out.append(i)
        at += len(examples[i].input_ids)
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_packed_logits_equal_unpacked(kind, attn, examples):
    exs, tok = examples
    exs = exs[:6]
    rows = pack(exs, max_length=512)
    model = tiny_model(kind, attn, len(tok))
    batch = collate(rows, pad_id=tok.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    checked = 0
    for r, row in enumerate(rows):
        at = 0
        members = _members(exs, row)
        assert len(members) >= 1
        for i, logits in zip(members, _unpacked_logits(model, exs, members)):
            n = len(exs[i].input_ids)
            torch.testing.assert_close(packed[r, at:at + n], logits, atol=1e-5, rtol=1e-4)
            at += n
            checked += 1
    assert checked == len(exs) and any(len(_members(exs, row)) > 1 for row in rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_explicit_4d_mask_gives_the_same_logits(attn, examples):
    exs, tok = examples
    rows = pack(exs[:4], max_length=512)
    model = tiny_model("llama", attn, len(tok))
    batch = collate(rows, pad_id=tok.pad_token_id)
    mask = packed_attention_mask(batch["position_ids"], dtype=torch.float32 if attn == "eager" else None)
    with torch.no_grad():
        implicit = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        explicit = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask,
                         use_cache=False).logits
    real = batch["labels"] != IGNORE_INDEX
    torch.testing.assert_close(implicit[real], explicit[real], atol=1e-5, rtol=1e-4)


def test_without_position_restarts_packing_leaks_across_examples(examples):
    """The control: the same packed row with plain 0..T-1 positions does attend across examples."""
    exs, tok = examples
    rows = [r for r in pack(exs[:6], max_length=512) if len(_members(exs[:6], r)) > 1]
    model = tiny_model("llama", "sdpa", len(tok))
    row = rows[0]
    ids = torch.tensor([row.input_ids])
    first = len(exs[_members(exs[:6], row)[0]].input_ids)
    with torch.no_grad():
        leaky = model(input_ids=ids, use_cache=False).logits[0, first:]
        alone = _unpacked_logits(model, exs, [_members(exs[:6], row)[1]])[0]
    assert (leaky[:len(alone)] - alone).abs().max() > 1e-3


def _split(row):
    """A packed row cut back into its examples where the position ids restart: [(input_ids, labels), ...]."""
    starts = [k for k, p in enumerate(row.position_ids) if p == 0] + [len(row.input_ids)]
    return [(tuple(row.input_ids[a:b]), tuple(row.labels[a:b])) for a, b in zip(starts, starts[1:])]


def test_pack_keeps_every_example_once_within_max_length(examples):
    from collections import Counter

    exs, _ = examples
    rows = pack(exs, max_length=300)
    assert all(len(r.input_ids) <= 300 for r in rows)
    # Every example exactly once (duplicates counted as often as they occur: the course data has some), each with
    # its own labels except the first token, which would be predicted from the previous example.
    want = Counter((tuple(e.input_ids), (IGNORE_INDEX, *e.labels[1:])) for e in exs)
    got = Counter(part for r in rows for part in _split(r))
    assert got == want
    assert sum(want.values()) == len(exs) == 40 and len(want) < len(exs)  # the fixture does hold a duplicate
    assert all(r.position_ids == [p for ids, _ in _split(r) for p in range(len(ids))] for r in rows)
    assert len(rows) < len(exs)
    with pytest.raises(Exception, match="max_length"):
        pack(exs, max_length=10)


def test_collate_pads_right_with_ignored_labels():
    rows = [Example([5, 6, 7], [-100, 6, 7], position_ids=[0, 1, 2]), Example([8], [-100])]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    # each padding position starts a sequence of its own (position 0), so it sees nothing and nothing real sees it
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert "attention_mask" not in batch and "weights" not in batch


def test_pack_keeps_loss_weights():
    """Packed rows keep the call-token and per-example loss weights (token weight times the example's)."""
    a = Example([1, 2, 3], [1, 2, 3], weights=[1.0, 3.0, 3.0])
    b = Example([4, 5], [4, 5], weight=2.0)
    c = Example([6, 7], [6, 7])
    rows = pack([a, b, c], max_length=16)
    assert len(rows) == 1
    row = rows[0]
    assert row.input_ids == [1, 2, 3, 4, 5, 6, 7] and row.position_ids == [0, 1, 2, 0, 1, 0, 1]
    assert row.weights == [1.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    assert collate(rows, 0)["weights"].tolist() == [row.weights]
    assert pack([c], max_length=16)[0].weights is None


def test_length_grouping_cuts_padding_and_covers_every_index():
    import random

    lengths = [random.Random(i).randint(50, 2000) for i in range(1000)]
    grouped = length_grouped_batches(lengths, batch_size=8, seed=1)
    shuffled = random_batches(len(lengths), batch_size=8, seed=1)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert padding_waste(lengths, grouped) < padding_waste(lengths, shuffled) / 3
    sampler = GroupByLengthSampler(lengths, batch_size=8)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 125 and first != second  # a new order every epoch

"""Prompt prefixes read once (`tooltune.prefix`, `GenerationConfig.reuse_prefix`): the turn units of a dialogue take
their cache from one read of its longest prompt, the assembled cache continues every prompt exactly as reading it
alone would (sliding-window layers, left padding and positions included), and `predict` gives the same predictions
with and without it, greedy and drawn, on a multi-turn course file."""


import pytest
import torch
from bot_support import ScriptedLM, tiny_llama, tokenizer_for
from formats_support import tiny_dialogue

from tooltune.inference import GenerationConfig, Generator
from tooltune.prefix import PrefixCaches, plan_hosts, reusable, serves

WINDOW = 8  # the tiny Gemma-3's sliding window: every course prompt is far longer


def tiny_gemma(vocab: int, lora: bool = False):
    """Gemma-3's layout in miniature: a sliding-window layer, then a global one; with `lora`, a PEFT LoRA adapter
    whose weights are not the identity's (so it changes what the model computes)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=8192, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"])).eval()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj", "down_proj"])).eval()
    return model


def _config(**options) -> GenerationConfig:
    """Results rendered compactly (as G7 was trained) and no prompt cut unless asked."""
    return GenerationConfig(**{"observation": "compact", "max_prompt_tokens": 4096, **options})


def _prompts(generator, units):
    return [generator.prompt_ids(u.history, u.tools) for u in units]


def _last_units(units):
    """Index of each dialogue's last unit."""
    last = {}
    for i, unit in enumerate(units):
        last[unit.id.split(":")[1]] = i
    return set(last.values())


def test_a_dialogue_is_read_once_from_its_last_unit_and_a_cut_prompt_alone(dev_units):
    fmt, tok = tokenizer_for("llama2")
    generator = Generator(tiny_gemma(len(tok)), tok, fmt, config=_config())
    prompts = _prompts(generator, dev_units)
    host_of = plan_hosts(prompts, range(len(prompts)))
    # The llama2 format's prompts are prefix-stable token by token: each dialogue is read once, from its last unit.
    assert set(host_of.values()) == _last_units(dev_units)
    assert all(serves(prompts[host], prompts[i]) for i, host in host_of.items())

    short = Generator(tiny_gemma(len(tok)), tok, fmt, config=_config(max_prompt_tokens=600))
    cut_prompts = _prompts(short, dev_units)
    cut = [i for i, (p, q) in enumerate(zip(cut_prompts, prompts)) if p != q]  # segments dropped from the front
    assert cut and len(cut) < len(prompts)
    host_of = plan_hosts(cut_prompts, range(len(prompts)))
    assert all(serves(cut_prompts[host], cut_prompts[i]) for i, host in host_of.items())
    assert len(set(host_of.values())) > len(_last_units(dev_units))  # a cut prompt begins no uncut one
    assert serves([1, 2, 3], [1, 2, 9]) and serves([1, 2], [1, 2, 9]) and not serves([1, 2], [1, 2, 3, 4])
    assert not serves([1, 5, 3], [1, 2, 9])


def test_an_assembled_cache_continues_each_prompt_as_reading_it_alone_would(dev_units):
    """Batches that mix dialogues and lengths, left-padded: the next-token logits from the assembled cache and the
    prompt's last token are those of a plain forward pass over the prompt alone. A slice off by one token, a position
    counted from the padding or a sliding-window layer that kept too little would each move them."""
    fmt, tok = tokenizer_for("llama2")
    model = tiny_gemma(len(tok))
    prompts = _prompts(Generator(model, tok, fmt, config=_config()), dev_units)
    assert min(len(p) for p in prompts) > 4 * WINDOW
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[0::2], order[1::2]]
    shared = PrefixCaches(model, prompts, batches)
    with torch.no_grad():
        for batch in batches:
            width = max(len(prompts[i]) for i in batch)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch])
            last = torch.tensor([[prompts[i][-1]] for i in batch])
            positions = torch.tensor([[len(prompts[i]) - 1] for i in batch])
            cache = shared.cache(batch)
            assert cache.get_seq_length() == width - 1
            logits = model(input_ids=last, attention_mask=mask, position_ids=positions, past_key_values=cache).logits
            wrong = model(input_ids=last, attention_mask=mask, position_ids=positions + 1,
                          past_key_values=shared.cache(batch)).logits
            for row, i in enumerate(batch):
                alone = model(input_ids=torch.tensor([prompts[i]])).logits[0, -1]
                torch.testing.assert_close(logits[row, -1], alone, rtol=1e-5, atol=1e-5)
                assert not torch.allclose(wrong[row, -1], alone, rtol=1e-5, atol=1e-5)  # the check can see it
            shared.release(batch)
    assert shared.stats.reads == len(_last_units(dev_units)) and not shared.kv and shared.held == 0
    assert shared.stats.tokens_read == sum(len(prompts[i]) - 1 for i in _last_units(dev_units))


@pytest.mark.parametrize("options", [
    dict(),
    dict(samples=3, temperature=1.0, top_k=20, seed=0),  # minimum Bayes risk: greedy plus seeded draws
    dict(temperature=1.0, seed=3),  # one draw
    dict(lora=True),
    dict(vocab=True, max_prompt_tokens=600),  # the domain vocabulary's head; late units cut at the front
], ids=["greedy", "mbr", "drawn", "lora", "vocab-cut"])
def test_predictions_are_those_of_reading_every_prompt_in_its_batch(dev_units, options):
    options = dict(options)
    fmt, tok = tokenizer_for("llama2")
    model = tiny_gemma(len(tok), lora=options.pop("lora", False))
    if options.pop("vocab", False):
        options["output_vocab"] = frozenset(range(0, len(tok), 2))
    preds, stats = {}, {}
    for reuse in (False, True):
        generator = Generator(model, tok, fmt, config=_config(max_new_tokens=16, batch_size=4, reuse_prefix=reuse,
                                                              **options))
        preds[reuse] = [(p.raw, p.new_tokens) for p in generator.predict([u.history for u in dev_units],
                                                                          [u.tools for u in dev_units])]
        stats[reuse] = generator.prefix_stats
    assert preds[True] == preds[False]
    assert len({raw for raw, _ in preds[True]}) > 1  # the tiny model does not say the same thing everywhere
    assert stats[False].reads == 0
    assert 0 < stats[True].reads < len(dev_units) and stats[True].prompts_served == len(dev_units)


def test_what_cannot_share_a_read_takes_the_plain_path():
    fmt, tok = tokenizer_for("llama2")
    assert reusable(tiny_gemma(len(tok))) and reusable(tiny_gemma(len(tok), lora=True))
    assert reusable(tiny_llama(len(tok)))
    assert not reusable(ScriptedLM([]))
    from peft import PromptTuningConfig, get_peft_model

    prompt_tuned = get_peft_model(tiny_llama(len(tok)), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                           num_virtual_tokens=4))
    assert not reusable(prompt_tuned)  # its virtual tokens are in no prompt's ids
    # One history (the chat, dialogue mode): nothing to share, no read of its own.
    generator = Generator(tiny_gemma(len(tok)), tok, fmt, config=GenerationConfig(max_new_tokens=4))
    generator.predict([tiny_dialogue().turns[:3]])
    assert generator.prefix_stats.reads == 0

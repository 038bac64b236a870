"""Greedy decoding with continuous batching (`tooltune.continuous`, `GenerationConfig.continuous`): a row that ends
leaves the batch and the next prompt takes its place, and every row gets the tokens `generate` gives it in fixed
batches (float32, the tiny Gemma-3 with its sliding-window layer), with and without prefix reuse, an adapter, the
domain vocabulary's head, rows ending at end tokens, at text stops and at the token limit; it decodes fewer steps."""


import pytest
import torch
from bot_support import tokenizer_for
from test_prefix_reuse import WINDOW, _config, tiny_gemma

from tooltune.continuous import join, plain_greedy
from tooltune.inference import Generator
from tooltune.prefix import PrefixCaches


def _likely(model, ids, scale: float):
    """The tiny model, made to say `ids` now and then (their tied output rows, zero for the padding, redrawn
    larger): its rows then end at different steps."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weight = base.get_output_embeddings().weight
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in ids:
            weight[t] = torch.randn(weight.shape[1], generator=generator) * scale
    return model


class StepCount:
    """Decoder forward passes that read one token a row (decoding steps), over a model's life."""

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.steps = 0
        base.get_decoder().register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] == 1:
            self.steps += 1


def _predict(model, tok, fmt, units, **options):
    generator = Generator(model, tok, fmt, config=_config(**options))
    return [(p.raw, p.new_tokens) for p in generator.predict([u.history for u in units], [u.tools for u in units])]


@pytest.mark.parametrize("options", [
    dict(batch_size=3),
    dict(batch_size=2, reuse_prefix=False),
    dict(batch_size=4, lora=True),
    dict(batch_size=3, vocab=True, max_prompt_tokens=600),
], ids=["greedy", "no-reuse", "lora", "vocab-cut"])
def test_continuous_batching_gives_each_row_the_tokens_of_fixed_batches(dev_units, options):
    options = dict(options)
    fmt, tok = tokenizer_for("llama2")
    model = _likely(tiny_gemma(len(tok), lora=options.pop("lora", False)), [tok.eos_token_id], 0.1)
    if options.pop("vocab", False):
        options["output_vocab"] = frozenset(range(0, len(tok), 2))
    count = StepCount(model)
    fixed = _predict(model, tok, fmt, dev_units, max_new_tokens=24, continuous=False, **options)
    fixed_steps, count.steps = count.steps, 0
    continuous = _predict(model, tok, fmt, dev_units, max_new_tokens=24, **options)
    assert continuous == fixed
    lengths = {n for _, n in fixed}
    assert min(lengths) < max(lengths) == 24  # rows end at different steps, some at the limit
    assert count.steps <= fixed_steps
    if options == dict(batch_size=3):  # here the rows' lengths vary most: the places freed are used
        assert count.steps < fixed_steps


def test_text_stops_end_a_row_where_generate_ends_it(dev_units):
    """A stop string of several tokens, taken from the middle of what the model writes: the rows that write it end
    there, at the step where `generate`'s criterion ends them."""
    fmt, tok = tokenizer_for("llama2")
    model = tiny_gemma(len(tok))
    free = _predict(model, tok, fmt, dev_units, max_new_tokens=24, batch_size=3, continuous=False)
    raw = next(raw for raw, n in free if n == 24 and len(raw) > 12)
    stop = raw[6:9]  # three characters, so several tokens or a part of one: checked on the text
    preds = {}
    for continuous in (False, True):
        generator = Generator(model, tok, fmt, config=_config(max_new_tokens=24, batch_size=3,
                                                              continuous=continuous))
        generator.text_stops, generator._text_stop_criterion = (stop,), None
        preds[continuous] = [(p.raw, p.new_tokens)
                             for p in generator.predict([u.history for u in dev_units], [u.tools for u in dev_units])]
    assert preds[True] == preds[False]
    assert any(n < 24 and stop in raw for raw, n in preds[True])


def test_joined_caches_continue_each_row_as_reading_it_alone(dev_units):
    """Two batches' caches of different widths, joined: each row's next-token logits are those of its prompt read
    alone (the sliding-window layer holds less than the longest prompt; columns that are padding everywhere go)."""
    fmt, tok = tokenizer_for("llama2")
    model = tiny_gemma(len(tok))
    generator = Generator(model, tok, fmt, config=_config())
    prompts = [generator.prompt_ids(u.history, u.tools) for u in dev_units]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    first, second = order[:2], order[-2:]
    shared = PrefixCaches(model, prompts, [first + second])
    parts = []
    for rows in (first, second):
        width = max(len(prompts[i]) for i in rows) - 1
        mask = torch.tensor([[0] * (width - len(prompts[i]) + 1) + [1] * (len(prompts[i]) - 1) for i in rows])
        parts.append((shared.cache(rows), mask))
    cache, mask = join(model, parts)
    rows = first + second
    assert mask.shape[1] == max(len(prompts[i]) for i in rows) - 1 > WINDOW
    assert mask.sum(1).tolist() == [len(prompts[i]) - 1 for i in rows]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[prompts[i][-1]] for i in rows]),
                       attention_mask=torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long)], 1),
                       position_ids=torch.tensor([[len(prompts[i]) - 1] for i in rows]),
                       past_key_values=cache).logits
        for row, i in enumerate(rows):
            alone = model(input_ids=torch.tensor([prompts[i]])).logits[0, -1]
            torch.testing.assert_close(logits[row, -1], alone, rtol=1e-5, atol=1e-5)


def test_a_model_whose_config_asks_generate_for_processors_takes_generate(dev_units):
    fmt, tok = tokenizer_for("llama2")
    model = tiny_gemma(len(tok))
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3
    assert not plain_greedy(model)
    count = StepCount(model)
    preds = _predict(model, tok, fmt, dev_units[:4], max_new_tokens=6, batch_size=2)
    assert count.steps == 2 * 6 and all(n == 6 for _, n in preds)  # two fixed batches, each to the limit

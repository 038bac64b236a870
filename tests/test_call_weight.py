"""`data.call_weight`: the loss weight of call tokens against reply tokens, from the format's segments to the loss.

The weight changes what the loss counts, never what the model reads: every format renders the same ids and labels
with and without it, call tokens (their end tokens too) carry the weight, reply tokens 1, and the loss is the
weighted sum over the plain count of trained tokens."""

from __future__ import annotations

import pytest
import torch
from bot_support import tiny_llama as tiny_llama_for_vocab
from formats_support import GEMMA_LIKE, QWEN_LIKE, byte_bpe, corpus, tiny_dialogue, with_template

from tooltune.errors import InputError
from tooltune.formats import FORMATS, IGNORE_INDEX, encode, ensure_special_tokens
from tooltune.formats import Example
from tooltune.formats.packing import collate
from tooltune.train.loss import TokenLoss

VARIANTS = [("chatglm2", None), ("chatglm3", None), ("llama2", None), ("chat_template", QWEN_LIKE),
            ("chat_template", GEMMA_LIKE)]
SPECIALS = {QWEN_LIKE: ["<|im_start|>", "<|im_end|>"], GEMMA_LIKE: ["<start_of_turn>", "<end_of_turn>"]}


@pytest.fixture(scope="module")
def bpe():
    return byte_bpe(corpus([tiny_dialogue()]) + ["北京酒店 经济型 豪华型 推荐 评分"] * 5, vocab_size=400)


def _format(name, template, bpe):
    tok = bpe
    if template is not None:
        tok = with_template(bpe, template, SPECIALS[template])
    fmt = FORMATS[name].for_tokenizer(tok)
    ensure_special_tokens(tok, fmt.special_tokens)
    return fmt, tok


@pytest.mark.parametrize("name,template", VARIANTS)
def test_call_tokens_carry_the_weight_and_nothing_else_changes(name, template, bpe):
    import copy
    fmt, tok = _format(name, template, copy.deepcopy(bpe))
    dialogue = tiny_dialogue()
    plain = [encode(s, tok) for s in fmt.render(dialogue)]
    weighted = [encode(s, tok) for s in fmt.render(dialogue, call_weight=2.5)]
    assert [(e.input_ids, e.labels) for e in weighted] == [(e.input_ids, e.labels) for e in plain]
    assert all(e.weights is None for e in plain)
    seen_weights, call_text, reply_text = set(), "", ""
    for ex in weighted:
        weights = ex.weights or [1.0] * len(ex.labels)  # chatglm2: a reply's own sample holds no call
        assert len(weights) == len(ex.labels)
        for label, w in zip(ex.labels, weights):
            seen_weights.add(w)
            if label == IGNORE_INDEX:
                assert w == 1.0  # untrained tokens are never weighted
        call_text += tok.decode([i for i, w in zip(ex.labels, weights) if i != IGNORE_INDEX and w == 2.5])
        reply_text += tok.decode([i for i, w in zip(ex.labels, weights) if i != IGNORE_INDEX and w == 1.0])
    # the weighted tokens spell the calls, the others the replies
    assert "早餐服务" in call_text and "豪华型" in call_text and "推荐" not in call_text
    assert "推荐甲酒店" in reply_text and "不客气" in reply_text and "早餐服务" not in reply_text
    assert seen_weights == {1.0, 2.5}


def test_llama2_weights_exactly_the_call_text_and_its_end_token(bpe):
    import copy
    fmt, tok = _format("llama2", None, copy.deepcopy(bpe))
    ex = encode(fmt.render(tiny_dialogue(), call_weight=3.0)[0], tok)
    runs, current = [], None
    for label, w in zip(ex.labels, ex.weights):
        if label == IGNORE_INDEX:
            current = None
            continue
        if current is None or current[0] != w:
            current = (w, [])
            runs.append(current)
        current[1].append(label)
    texts = [(w, tok.decode(ids)) for w, ids in runs]
    assert [w for w, _ in texts] == [3.0, 1.0, 3.0, 1.0]  # call, reply, call, reply: the tiny dialogue's turns
    assert all(t.startswith("search:") and t.endswith(tok.eos_token) for w, t in texts if w == 3.0)
    assert all(t.startswith("assistant:") for w, t in texts if w == 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_weight_that_is_not_above_zero_is_refused(bad, bpe):
    with pytest.raises(InputError) as caught:
        FORMATS["llama2"].render(tiny_dialogue(), call_weight=bad)
    assert caught.value.field == "call_weight"


def test_the_loss_is_the_weighted_sum_over_the_plain_token_count():
    model = tiny_llama_for_vocab(50)
    # tokens 7, 8 (second and third targets of row 0) are "call" tokens at weight 4; row 1 has example weight 2
    rows = [Example([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9], weights=[1.0, 1.0, 4.0, 4.0, 1.0]),
            Example([9, 8, 7, 6], [-100, 8, 7, 6], weight=2.0)]
    batch = collate(rows, 0)
    assert batch["weights"].shape == batch["labels"].shape
    assert batch["weights"][1].tolist() == [2.0, 2.0, 2.0, 2.0, 0.0]  # example weight on every token, pad 0
    module = TokenLoss(model, plain=False).eval()
    with torch.no_grad():
        weighted, n = module(**batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                  batch["labels"][:, 1:].reshape(-1), reduction="none",
                                                  ignore_index=-100).reshape(2, -1)
    expected = (per_token[0, 1] * 4 + per_token[0, 2] * 4 + per_token[0, 3]) + 2 * per_token[1, :3].sum()
    assert float(weighted) == pytest.approx(float(expected), rel=1e-5)
    assert int(n) == 6


def test_a_run_trains_with_the_weight_and_records_it(tmp_path):
    """Through `tooltune train` on dialogues, with the frozen bottom cached: the first step's loss is the weighted
    one (higher than the plain run's from the same weights, every token loss being positive) and config.yaml keeps
    the weight; the dev loss stays unweighted (equal in both runs before any step)."""
    import json

    import yaml

    from tooltune.cli import main
    from tooltune.datafiles import write_dialogues
    from tooltune.train.tiny import save_tiny_model, tiny_tokenizer

    model = save_tiny_model(tmp_path / "model")
    tiny_tokenizer().save_pretrained(model)
    write_dialogues([tiny_dialogue()] * 4, tmp_path / "train.jsonl", "seed")

    def first_losses(weight):
        out = tmp_path / f"run-{weight}"
        assert main(["train", "configs/lora.yaml", f"model.path={model}", f"data.train={tmp_path / 'train.jsonl'}",
                     f"data.dev={tmp_path / 'train.jsonl'}", "data.format=llama2", f"data.call_weight={weight}",
                     "method.layers=top:1", "train.cache_frozen=true", "train.max_steps=1", "train.batch_size=4",
                     "train.log_every=1", "train.eval_every=1", "model.dtype=float32", f"train.out={out}"]) == 0
        assert yaml.safe_load((out / "config.yaml").read_text())["data"]["call_weight"] == weight
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return next(e["loss"] for e in log if "loss" in e), [e["dev_loss"] for e in log if "dev_loss" in e]

    plain, plain_dev = first_losses(1.0)
    weighted, weighted_dev = first_losses(3.0)
    assert weighted > plain * 1.2
    assert plain_dev and plain_dev == pytest.approx(weighted_dev, rel=0.2)  # unweighted, after one small step

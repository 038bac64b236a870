"""Rebalancing by category (`tooltune data balance`) and the loss weights of the same categories, on course dialogues."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tooltune.cli import main
from tooltune.datafiles import read_dialogues
from tooltune.curation.balance import BY, balance, categoriser, loss_weights
from tooltune.formats import Example
from tooltune.formats.packing import collate
from tooltune.train.loss import TokenLoss
from tooltune.train.tiny import tiny_llama


@pytest.fixture(scope="module")
def dev(course_dir):
    return read_dialogues(course_dir / "dev.chatglm3.jsonl")


@pytest.mark.parametrize("by", BY)
def test_downsample_cuts_every_large_category_to_the_target_and_keeps_the_rest(dev, by):
    r = balance(dev, by, "downsample", seed=3)
    assert r.target == round(len(dev) / len(r.before))
    for cat, n in r.before.items():
        assert r.after[cat] == min(n, r.target)
    assert r.counts["removed"] == len(dev) - len(r.dialogues) > 0
    assert all(d in dev for d in r.dialogues)  # originals only, nothing added
    assert r.after == Counter(map(categoriser(by, dev), r.dialogues))


@pytest.mark.parametrize("strategy", ["upsample", "augment"])
def test_upsample_and_augment_fill_small_categories_up_to_the_target(dev, strategy):
    r = balance(dev, "slot-keys", strategy, seed=1, target=10)
    for cat, n in r.before.items():
        assert r.after[cat] == max(n, 10)
    added = r.dialogues[len(dev):]
    assert r.dialogues[:len(dev)] == list(dev) and len(added) == sum(r.counts.values())
    changed = sum(v for k, v in r.counts.items() if k.startswith("augmented"))
    if strategy == "upsample":
        assert set(r.counts) == {"copied"} and all(d in dev for d in added)
    else:
        # Each counted augmentation really changed its copy (a new turn, a paraphrased facility).
        assert changed > 0 and sum(d not in dev for d in added) == changed


def test_balance_is_seeded(dev):
    a, b = (balance(dev, "turn-type", "downsample", seed=5).dialogues for _ in range(2))
    assert a == b != balance(dev, "turn-type", "downsample", seed=6).dialogues


@pytest.mark.parametrize("by", BY)
def test_loss_weights_give_every_category_the_same_total_and_average_one(dev, by):
    w = loss_weights(dev, by)
    cats = list(map(categoriser(by, dev), dev))
    totals = Counter()
    for c, x in zip(cats, w):
        totals[c] += x
    assert sum(w) / len(w) == pytest.approx(1.0)
    assert max(totals.values()) == pytest.approx(min(totals.values()))


def test_weighted_loss_is_the_weighted_sum_of_token_losses():
    model = tiny_llama(50, seed=0)
    rows = [Example([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9], weight=1.0), Example([9, 8, 7, 6], [-100, 8, 7, 6], weight=3.0)]
    module = TokenLoss(model, plain=False).eval()
    with torch.no_grad():
        weighted, n = module(**collate(rows, 0))
        plain = [module(**collate([Example(r.input_ids, r.labels)], 0)) for r in rows]
    assert "weights" in collate(rows, 0) and "weights" not in collate([Example([1, 2], [1, 2])], 0)
    assert float(weighted) == pytest.approx(float(plain[0][0]) + 3 * float(plain[1][0]), rel=1e-5)
    assert int(n) == int(plain[0][1] + plain[1][1])  # the normaliser stays the token count


def test_data_balance_command_writes_dialogues_table_and_plot(course_dir, tmp_path, capsys):
    out = tmp_path / "balanced.jsonl"
    assert main(["data", "balance", str(course_dir / "dev.chatglm3.jsonl"), str(out), "--by", "turn-type",
                 "--strategy", "upsample", "--report", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    expected = balance(read_dialogues(course_dir / "dev.chatglm3.jsonl"), "turn-type", "upsample")
    assert read_dialogues(out) == [d.__class__(d.turns, d.tools, id=f"balanced.jsonl:{i + 1}")
                                   for i, d in enumerate(expected.dialogues)]
    assert "| total | 201 |" in printed and f"| total | 201 | | {len(expected.dialogues)} |" in printed
    assert (tmp_path / "rep" / "balance.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "balance", str(course_dir / "dev.chatglm3.jsonl"), str(out), "--by", "facility",
                 "--strategy", "downsample", "--target", "0"]) == 2
    assert "--target" in capsys.readouterr().err

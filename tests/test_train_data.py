"""Training data: encoded-example files with located errors, batch order, packing that leaves the loss unchanged,
and the course dialogues rendered by a chat format straight into `tooltune train`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tooltune.cli import main
from tooltune.errors import InputError
from tooltune.rundir import read_config
from tooltune.formats.packing import collate, pack
from tooltune.train.data import batch_order, read_examples
from tooltune.train.loss import TokenLoss
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_llama


def test_bad_example_lines_name_file_line_and_field(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}\n{"input_ids": [1, 2], "labels": [2]}\n')
    with pytest.raises(InputError, match=r"ex.jsonl:2: labels: has 1 entries for 2 input_ids"):
        read_examples(path)
    path.write_text('{"input_ids": [1, "x"], "labels": [1, 2]}\n')
    with pytest.raises(InputError, match=r"ex.jsonl:1: input_ids: must be a list of integers"):
        read_examples(path)


def test_batch_order_uses_every_example_once_and_grouping_cuts_padding():
    lengths = [len(e.input_ids) for e in synthetic_examples(200, 50, min_len=5, max_len=300)]
    for grouped in (False, True):
        batches = batch_order(lengths, 8, seed=3, epoch=1, group_by_length=grouped)
        assert sorted(i for b in batches for i in b) == list(range(200))
        assert batches == batch_order(lengths, 8, seed=3, epoch=1, group_by_length=grouped)  # deterministic
        assert batches != batch_order(lengths, 8, seed=3, epoch=2, group_by_length=grouped)  # reshuffled per epoch

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded(batch_order(lengths, 8, 3, 1, True)) < 0.7 * padded(batch_order(lengths, 8, 3, 1, False))


def test_packed_rows_give_the_same_token_losses_as_unpacked_examples():
    model = tiny_llama(90).eval()
    examples = synthetic_examples(7, 90, seed=4, min_len=5, max_len=30)
    rows = pack(examples, max_length=64)
    assert len(rows) < len(examples) and all(r.position_ids for r in rows)
    loss = TokenLoss(model, plain=False)
    with torch.no_grad():
        packed = [loss(**collate(rows, 0))]
        single = [loss(**collate([e], 0)) for e in examples]
    assert int(packed[0][1]) == sum(int(n) for _, n in single)
    assert float(packed[0][0]) == pytest.approx(sum(float(s) for s, _ in single), rel=1e-5)


def test_course_dialogues_train_through_a_chat_format(course_dir, tmp_path):
    lines = (course_dir / "train.chatglm3.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text("\n".join(lines[6:8]) + "\n", encoding="utf-8")
    model_dir = save_tiny_model(tmp_path / "model")
    tree = {"model": {"path": str(model_dir)}, "method": {"name": "lora"},
            "data": {"train": str(tmp_path / "train.jsonl"), "dev": str(tmp_path / "dev.jsonl"),
                     "format": "chatglm3", "max_length": 512, "packing": True, "observation": "compact"},
            "train": {"out": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    # The run's format is its config's (config.yaml, the one place a run stores it)
    assert read_config(tmp_path / "run").data.format == "chatglm3" and run["steps"] == 2 and run["packed_rows"]
    assert run["new_special_tokens"] >= 4  # ChatGLM3's role tokens, added to the tiny tokenizer
    adapter = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert adapter["trainable_token_indices"]  # their embedding rows are trained too
    # The dialogues are longer than 512 tokens here: the report says how many were cut from the front.
    assert "too long" in run["dropped_train"]

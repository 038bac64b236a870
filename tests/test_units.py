"""Evaluation units: the course's turn mode reproduced on its own test file, and the dialogue mode."""

import json
import re

import pytest

from tooltune.dialogue import Assistant, Call, Dialogue, Result, User, turn_from_seed
from tooltune.evaluate.predictions import Row
from tooltune.evaluate.units import eval_units, predict_dialogue, predict_dialogues
from tooltune.formats import ParsedTurn
from tooltune.inference import Prediction
from tooltune.datafiles import read_dialogues


def llama2_samples(path):
    """The course's turn samples: one (context turns, response turn) per line."""
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        obj = json.loads(line)
        where = f"{path.name}:{number}"
        context = tuple(turn_from_seed(t, where, i) for i, t in enumerate(json.loads(obj["context"])))
        samples.append((context, turn_from_seed(json.loads(obj["response"]), where)))
    return samples


def dialogues_from_samples(samples):
    """Regroup turn samples into dialogues: a sample continues the dialogue before it when its context extends
    that sample's context plus response; a dialogue is its last sample's context plus response."""
    groups = []
    for context, response in samples:
        if groups:
            prev_context, prev_response = groups[-1][-1]
            prefix = prev_context + (prev_response,)
            if context[:len(prefix)] == prefix:
                groups[-1].append((context, response))
                continue
        groups.append([(context, response)])
    return [Dialogue(group[-1][0] + (group[-1][1],)) for group in groups]


@pytest.fixture(scope="module")
def test_samples(course_dir):
    return llama2_samples(course_dir / "test.llama2.jsonl")


def test_turn_mode_reproduces_the_course_test_units(test_samples):
    dialogues = dialogues_from_samples(test_samples)
    assert len(dialogues) == 201  # the course's test split
    units = eval_units(dialogues)
    assert len(units) == 560
    assert sum(isinstance(u.gold, Call) for u in units) == 242
    assert sum(isinstance(u.gold, Assistant) for u in units) == 318
    # unit for unit, in file order: the same history and the same gold turn as test.llama2.jsonl
    assert [(u.history, u.gold) for u in units] == test_samples


@pytest.mark.parametrize("split, n_units", [("dev", 537), ("test", 560)])
def test_turn_mode_on_the_chatglm3_files_gives_the_course_units(course_dir, split, n_units):
    # The course measured on {split}.chatglm3.jsonl; its units must be the ones {split}.llama2.jsonl lists.
    dialogues = read_dialogues(course_dir / f"{split}.chatglm3.jsonl")
    units = eval_units(dialogues, split=split)
    assert len(units) == n_units
    assert [(u.history, u.gold) for u in units] == llama2_samples(course_dir / f"{split}.llama2.jsonl")
    assert units[-1].id == f"{split}:{len(dialogues) - 1}:{len(dialogues[-1].turns) - 1}"


def test_unit_ids_are_readable_and_point_at_the_gold_turn(test_samples):
    dialogues = dialogues_from_samples(test_samples)
    units = eval_units(dialogues, split="test")
    assert units[0].id == "test:0:1"
    assert len({u.id for u in units}) == len(units)
    for unit in units:
        split, d, t = re.fullmatch(r"(\w+):(\d+):(\d+)", unit.id).groups()
        assert split == "test"
        assert dialogues[int(d)].turns[int(t)] == unit.gold
        assert dialogues[int(d)].turns[:int(t)] == unit.history
    assert eval_units(dialogues, split="test") == units  # stable


SMALL = Dialogue((User("找个舒适型酒店"), Call({"type": "舒适型"}), Result([{"name": "A"}]), Assistant("推荐A。"),
                  User("电话是多少？"), Assistant("010-1234")))


def test_turn_mode_gives_each_unit_its_gold_history():
    seen = []

    def generate(history, tools):
        seen.append(history)
        return Prediction(ParsedTurn(Assistant("好的")), "好的", 0)

    units = eval_units([SMALL], split="dev")
    rows = [Row(u.id, u.gold, p.parsed.turn, p.raw) for u in units for p in [generate(u.history, u.tools)]]
    assert [r.id for r in rows] == ["dev:0:1", "dev:0:3", "dev:0:5"]
    assert [r.gold for r in rows] == [SMALL.turns[1], SMALL.turns[3], SMALL.turns[5]]
    assert seen == [SMALL.turns[:1], SMALL.turns[:3], SMALL.turns[:5]]
    assert all(r.pred == Assistant("好的") and r.raw == "好的" for r in rows)


def test_dialogue_mode_feeds_the_model_outputs_back():
    seen = []
    outputs = iter([Prediction(ParsedTurn(Assistant("先回复")), "先回复", 0),
                    Prediction(ParsedTurn(None), " search: {broken ", 0),
                    Prediction(ParsedTurn(Assistant("010-1234")), "010-1234", 0)])

    def generate(history, tools):
        seen.append(history)
        return next(outputs)

    rows = predict_dialogue(SMALL, generate, split="test", dialogue_index=7)
    assert [r.id for r in rows] == ["test:7:1", "test:7:3", "test:7:5"]
    user1, _, result, _, user2, _ = SMALL.turns
    assert seen[0] == (user1,)
    # the model's reply stands where the gold call was; user turns and tool results stay gold
    assert seen[1] == (user1, Assistant("先回复"), result)
    # an unparsable output goes back as the text the model wrote
    assert seen[2] == (user1, Assistant("先回复"), result, Assistant("search: {broken"), user2)
    assert rows[1].pred is None and rows[1].raw == " search: {broken "
    assert [r.gold for r in rows] == [SMALL.turns[1], SMALL.turns[3], SMALL.turns[5]]


def test_dialogue_mode_ids_match_turn_mode(test_samples):
    dialogues = dialogues_from_samples(test_samples)[:20]
    rows = predict_dialogues(dialogues, lambda history, tools: Prediction(ParsedTurn(Assistant("好的")), "好的", 0))
    assert [r.id for r in rows] == [u.id for u in eval_units(dialogues)]

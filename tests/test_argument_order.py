"""`data.argument_order`: calls rendered with their arguments in the tool schema's order, in training and in prompts
alike, and the setting travels with the run (and with a merged export)."""

from __future__ import annotations

import json

import pytest
import yaml

from tooltune.cli import main
from tooltune.dialogue import (
    HOTEL_TOOL,
    Assistant,
    Call,
    Dialogue,
    Result,
    User,
    order_arguments,
)
from tooltune.errors import InputError
from tooltune.datafiles import write_dialogues
from tooltune.formats import get_format
from tooltune.inference import Generator
from tooltune.runs import load_for_inference
from tooltune.train.config import config_from_dict
from tooltune.train.data import render_dialogues
from tooltune.train.tiny import save_tiny_model

WRITTEN = {"facilities": ["无烟房"], "price_range_upper": 300, "type": "经济型"}  # the course's alphabetical order


def dialogue() -> Dialogue:
    return Dialogue((User("找一家300元以内、有无烟房的经济型酒店"), Call(dict(WRITTEN)),
                     Result([{"name": "如家", "price": 280}]), Assistant("推荐如家，280元。")))


def test_schema_order_follows_the_tools_properties_and_keeps_undeclared_keys_last():
    call = Call({"rating_range_lower": 4.5, "made_up": 1, "type": "经济型", "name": "如家"})
    (ordered,) = order_arguments([call], [HOTEL_TOOL], "schema")
    assert list(ordered.arguments) == ["name", "type", "rating_range_lower", "made_up"]
    assert ordered.arguments == call.arguments  # same values, only the layout changes
    user = User("hi")
    assert order_arguments([user, call], [HOTEL_TOOL], "as-written") == (user, call)
    with pytest.raises(ValueError, match="argument order"):
        order_arguments([call], [HOTEL_TOOL], "alphabetical")


def test_bad_argument_order_in_a_config_names_the_field():
    with pytest.raises(InputError, match="data.argument_order"):
        config_from_dict({"data": {"argument_order": "sorted"}})


def rendered_text(tmp_path, order: str) -> str:
    path = tmp_path / f"{order}.jsonl"
    write_dialogues([dialogue()], path, "seed")
    model_dir = save_tiny_model(tmp_path / "model")
    cfg = config_from_dict({"data": {"format": "llama2", "argument_order": order}})
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    (example,), _ = render_dialogues(path, cfg.data, tokenizer)
    return tokenizer.decode(example.input_ids)


def test_training_renders_calls_in_the_chosen_order(tmp_path):
    written, schema = rendered_text(tmp_path, "as-written"), rendered_text(tmp_path, "schema")
    assert written.index('"facilities"') < written.index('"type"')
    assert schema.index('"type"') < schema.index('"facilities"') < schema.index('"price_range_upper"')
    assert len(written) == len(schema)  # nothing else changes


def test_the_order_travels_with_the_run_and_its_export_and_prompts_follow_it(tmp_path):
    data = tmp_path / "train.jsonl"
    write_dialogues([dialogue()] * 4, data, "seed")
    model_dir = save_tiny_model(tmp_path / "model")
    tree = {"model": {"path": str(model_dir)}, "method": {"name": "lora"},
            "data": {"train": str(data), "format": "llama2", "observation": "compact", "argument_order": "schema"},
            "train": {"out": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 0
    assert main(["export", str(tmp_path / "run"), "--merge", str(tmp_path / "merged")]) == 0
    info = json.loads((tmp_path / "merged" / "tooltune_run.json").read_text())
    assert (info["observation"], info["argument_order"]) == ("compact", "schema")
    history = list(dialogue().turns[:3]) + [User("再便宜一点")]
    for path in (tmp_path / "run", tmp_path / "merged"):
        loaded = load_for_inference(path)
        assert (loaded.observation, loaded.argument_order) == ("compact", "schema")
        generator = Generator(loaded.model, loaded.tokenizer, get_format(loaded.format),
                              config=loaded.generation(max_new_tokens=4))
        prompt = loaded.tokenizer.decode(generator.prompt_ids(history))
        assert prompt.index('"type"') < prompt.index('"facilities"'), path


def test_data_show_renders_the_chosen_order(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    write_dialogues([dialogue()], path, "seed")
    for order in ("as-written", "schema"):
        assert main(["data", "show", str(path), "--format", "llama2", "--argument-order", order, "--color", "never"]) == 0
        out = capsys.readouterr().out
        assert (out.index('"type"') < out.index('"facilities"')) == (order == "schema"), out


def test_the_domain_vocabulary_is_read_from_the_rendering_the_run_trained_on():
    from tooltune.inference import domain_vocab

    class Recording:  # a format that notes the key order of each call it is asked to render
        def __init__(self):
            self.keys = []

        def for_tokenizer(self, tokenizer):
            return self

        def render(self, dialogue, observation):
            self.keys += [list(turn.arguments) for turn in dialogue.turns if isinstance(turn, Call)]
            return []

    for order, first in (("schema", "type"), ("as-written", "facilities")):
        fmt = Recording()
        domain_vocab([dialogue()], None, fmt, "full", order)
        assert [keys[0] for keys in fmt.keys] == [first], order

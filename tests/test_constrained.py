"""Schema-constrained calls (`tooltune.constrained`) on every chat format, with a random 2-layer Llama.

A random model never opens a call by itself, so `Opening` (a test-only processor put before the constraint) writes
the format's call opener first; from there on the model is on its own. Unconstrained, the same model writes garbage
after the opener (the test can fail); constrained, every call parses cleanly and passes the schema.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import pytest
import torch

pytest.importorskip("llguidance", reason="the 'constrained' extra (llguidance) is not installed")

from bot_support import tiny_llama, tokenizer_for, written_ids  # noqa: E402
from formats_support import tiny_dialogue  # noqa: E402
from tooltune.constrained import CALL_STYLES, Constraint, Copy, span_regex  # noqa: E402
from tooltune.dialogue import HOTEL_TOOL, Call, Result, User  # noqa: E402
from tooltune.errors import ToolTuneError  # noqa: E402
from tooltune.formats import FORMATS  # noqa: E402
from tooltune.inference import GenerationConfig, Generator  # noqa: E402
from tooltune.schema import argument_problems  # noqa: E402

OPENERS = {"llama2": "search:", "chatglm2": "search_hotels\n", "chatglm3": "search_hotels\n",
           "chat_template": "<tool_call>"}
MAX_NEW = 700  # above the longest body the grammar allows with this tokenizer (byte-spelled Chinese)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models step faster on one thread, and far faster on a machine whose cores are shared (measured here:
    25 s on 2 threads, 0.5 s on 1 for the same 4 x 48 tokens)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def histories() -> list[list[Any]]:
    turns = list(tiny_dialogue().turns)
    return [turns[:k + 1] for k, t in enumerate(turns) if isinstance(t, (User, Result))]


class Opening:
    """Forces `ids` as the first generated tokens (a model that decided to call)."""

    def __init__(self, ids: list[int], width: int):
        self.ids, self.width = ids, width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.width
        if step < len(self.ids):
            scores[:] = float("-inf")
            scores[:, self.ids[step]] = 0.0
        return scores


class OpeningGenerator(Generator):
    opener_ids: list[int] = []

    def _logits_processors(self, tools: Sequence[Sequence[Any]], width: int, copies: Sequence[Any] = ()) -> list[Any]:
        return [Opening(self.opener_ids, width)] + super()._logits_processors(tools, width, copies)


def generator(name: str, constrained: bool, opening: bool) -> Generator:
    fmt, tok = tokenizer_for(name)
    cls = OpeningGenerator if opening else Generator
    gen = cls(tiny_llama(len(tok)), tok, fmt, config=GenerationConfig(
        max_new_tokens=MAX_NEW if opening else 48, max_prompt_tokens=8192, constrained=constrained, batch_size=4))
    if opening:
        gen.opener_ids = opener_ids(tok, OPENERS[name])
    return gen


def opener_ids(tok: Any, text: str) -> list[int]:
    tid = tok.convert_tokens_to_ids(text)
    if text.startswith("<") and tid is not None and tid != tok.unk_token_id:
        return [tid]
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("name", list(CALL_STYLES))
def test_random_model_calls_are_valid_when_constrained(name):
    preds = generator(name, constrained=True, opening=True).predict(histories())
    for p in preds:
        assert isinstance(p.parsed.turn, Call), p.raw
        assert not p.parsed.malformed, p.raw
        assert argument_problems(HOTEL_TOOL, p.parsed.turn.arguments) == [], p.raw
        assert p.parsed.turn.name == "search_hotels"
        assert p.new_tokens < MAX_NEW, "the call must close before the token budget"
    assert any(p.parsed.turn.arguments for p in preds), "a random model should write some arguments"


@pytest.mark.parametrize("name", list(CALL_STYLES))
def test_random_model_calls_are_garbage_unconstrained(name):
    gen = generator(name, constrained=False, opening=True)
    gen.config = GenerationConfig(max_new_tokens=48, max_prompt_tokens=8192, batch_size=4)
    preds = gen.predict(histories())
    bad = [p for p in preds if p.parsed.malformed or not isinstance(p.parsed.turn, Call)
           or argument_problems(HOTEL_TOOL, p.parsed.turn.arguments)]
    assert len(bad) == len(preds)


@pytest.mark.parametrize("name", list(CALL_STYLES))
def test_replies_are_untouched(name):
    free = generator(name, constrained=False, opening=False).predict(histories())
    held = generator(name, constrained=True, opening=False).predict(histories())
    assert [p.raw for p in held] == [p.raw for p in free]
    assert not any(isinstance(p.parsed.turn, Call) and not p.parsed.malformed for p in free)


GOLD_CALLS = [
    Call({"facilities": ["早餐服务", "国际长途电话"], "type": "经济型"}),  # not the schema's key order
    Call({"price_range_lower": 300, "price_range_upper": 400.5, "rating_range_lower": 4.5}),
    Call({"name": "北京新世界酒店"}),
    Call({}),
]
WRONG_CALLS = [
    Call({"stars": 5}),
    Call({"type": "便宜型"}),
    Call({"rating_range_lower": 7}),
    Call({"price_range_lower": -1}),
    Call({"facilities": "早餐服务"}),
]


def body_after_opener(name: str, call: Call) -> tuple[Constraint, Any, str]:
    fmt, tok = tokenizer_for(name)
    text = tok.decode(written_ids(fmt, tok, call), skip_special_tokens=False)
    gen = Generator(torch.nn.Linear(1, 1), tok, fmt, config=GenerationConfig(constrained=True))
    found = gen.constraint.opener([HOTEL_TOOL]).search(text)
    assert found is not None, text
    return gen.constraint, tok, text[found.end():]


def accepts(constraint: Constraint, body: str, copy: Copy | None = None) -> bool:
    """Whether the grammar takes the whole body and then allows the format's end token."""
    end = constraint.end_id
    body = body.split(constraint.tokenizer.convert_ids_to_tokens(end), 1)[0]
    for stop in ("<|im_end|>",):
        body = body.split(stop, 1)[0]
    m = constraint.matcher([HOTEL_TOOL], copy)
    ids = constraint.lltok.tokenize_str(body)
    return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()


@pytest.mark.parametrize("name", list(CALL_STYLES))
def test_grammar_accepts_the_formats_own_calls_and_refuses_wrong_ones(name):
    for call in GOLD_CALLS:
        constraint, _, body = body_after_opener(name, call)
        assert accepts(constraint, body), (name, body)
    for call in WRONG_CALLS:
        constraint, _, body = body_after_opener(name, call)
        assert not accepts(constraint, body), (name, body)


USER_WORDS = ("我想找有无烟房和wifi的酒店", "要'安静'一点，北京\\的")
KNOWN = (("facilities", ("24小时供应热水",)),)
COPIED_CALLS = [
    Call({"facilities": ["无烟房"]}),
    Call({"facilities": ["wifi", "24小时供应热水"], "type": "豪华型"}),  # a span, a known value, an enum
    Call({"name": "酒店"}),
    Call({"name": "安静"}),  # inside the quotes
    Call({"price_range_upper": 300}),
]
UNCOPIED_CALLS = [
    Call({"facilities": ["无烟房间"]}),  # reworded
    Call({"facilities": ["24小时热水"]}),  # a part of a known value is not that value
    Call({"name": "北京酒店"}),
    Call({"name": "无烟房和wifi的酒店要"}),  # spans do not run from one turn into the next
    Call({"facilities": [""]}),
]


@pytest.mark.parametrize("name", list(CALL_STYLES))
def test_copy_takes_spans_of_the_users_words_and_known_values_only(name):
    copy = Copy(USER_WORDS, KNOWN)
    for call in COPIED_CALLS:
        constraint, _, body = body_after_opener(name, call)
        assert accepts(constraint, body, copy), (name, body)
    for call in UNCOPIED_CALLS:
        constraint, _, body = body_after_opener(name, call)
        assert accepts(constraint, body) and not accepts(constraint, body, copy), (name, body)


def test_span_regex_is_every_span_up_to_the_cap():
    import re

    texts, cap = ("abcab", "xy"), 3
    pattern = re.compile(span_regex(texts, ["long-value"], cap, '"').replace("\\x{", "\\x").replace("}", ""))
    # (Python spells a code point escape without braces; the tests use 2-digit ones only)
    spans = {t[i:j] for t in texts for i in range(len(t)) for j in range(i + 1, min(len(t), i + cap) + 1)}
    candidates = {a + b + c for a in "abcxy-" for b in ["", *"abcxy"] for c in ["", *"abcxy"]}
    assert {c for c in candidates if pattern.fullmatch(c)} == spans
    assert pattern.fullmatch("long-value") and not pattern.fullmatch("long")
    assert span_regex(['"'], [], 3, '"') is None


def test_copied_calls_of_a_random_model_hold_only_the_users_words():
    gen = generator("llama2", constrained=True, opening=True)
    gen.config = GenerationConfig(max_new_tokens=MAX_NEW, max_prompt_tokens=8192, constrained=True, batch_size=4,
                                  copy_values=KNOWN)
    preds = gen.predict(histories())
    strings = 0
    for history, p in zip(histories(), preds):
        assert isinstance(p.parsed.turn, Call) and not p.parsed.malformed, p.raw
        assert argument_problems(HOTEL_TOOL, p.parsed.turn.arguments) == [], p.raw
        words = [t.content for t in history if isinstance(t, User)]
        args = p.parsed.turn.arguments
        for value in list(args.get("facilities", [])) + ([args["name"]] if "name" in args else []):
            strings += 1
            assert value in KNOWN[0][1] or any(value in w for w in words), (value, words)
    assert strings, "a random model should write some strings"


def test_copying_needs_constrained_decoding():
    fmt, tok = tokenizer_for("llama2")
    with pytest.raises(ToolTuneError, match="copy_values.*constrained"):
        Generator(torch.nn.Linear(1, 1), tok, fmt, config=GenerationConfig(copy_values=()))


def test_duplicate_key_is_refused():
    constraint, _, body = body_after_opener("chatglm2", Call({"type": "经济型"}))
    assert accepts(constraint, body)
    assert not accepts(constraint, body.replace("}", ', "type": "经济型"}'))


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    fmt, tok = tokenizer_for("llama2")
    with pytest.raises(ToolTuneError, match=r"tooltune\[constrained\]"):
        Generator(torch.nn.Linear(1, 1), tok, fmt, config=GenerationConfig(constrained=True))


def test_every_format_has_a_call_style():
    assert set(CALL_STYLES) == set(FORMATS)


def test_eval_command_passes_constrained(tmp_path, data_root, capsys):
    import json

    from bot_support import save_tiny_run
    from tooltune import cli

    run = save_tiny_run(tmp_path / "run", "chatglm2")
    data = data_root / "hotel/v3_chatglm3_llama2/test.chatglm3.jsonl"
    argv = ["eval", str(run), "--format", "chatglm2", "--data", str(data), "--out", str(tmp_path / "out"),
            "--limit", "2", "--max-new-tokens", "4", "--no-task-success", "--constrained"]
    assert cli.main(argv) == 0
    meta = json.loads((tmp_path / "out/metrics.json").read_text(encoding="utf-8"))
    assert meta["constrained"] is True and meta["units"] == 2 and meta["copy"] is False
    db = ["--db", str(tmp_path / "h.sqlite")]
    assert cli.main(argv[:-1] + ["--copy"] + db) == 2
    assert "--copy works through constrained decoding" in capsys.readouterr().err
    assert cli.main(argv + ["--copy"] + db) == 0
    meta = json.loads((tmp_path / "out/metrics.json").read_text(encoding="utf-8"))
    assert meta["constrained"] is True and meta["copy"] is True


def test_the_hotel_database_knows_facility_and_hotel_names(tmp_path, data_root):
    from tooltune.db import HotelDB

    known = dict(HotelDB.open(tmp_path / "h.sqlite", data_root).known_values())
    assert set(known) == {"facilities", "name"}
    assert "24小时热水" in known["facilities"] and "24小时供应热水" not in known["facilities"]
    assert len(known["name"]) == len(set(known["name"])) > 100


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_chat_and_serve_name_the_missing_extra(command, tmp_path, monkeypatch, capsys):
    from bot_support import save_tiny_run
    from tooltune import cli

    run = save_tiny_run(tmp_path / "run", "llama2")
    monkeypatch.setitem(sys.modules, "llguidance", None)
    assert cli.main([command, str(run), "--constrained", "--device", "cpu", "--db", str(tmp_path / "h.sqlite")]) == 2
    assert "tooltune[constrained]" in capsys.readouterr().err


def test_sentencepiece_style_tokenizer(data_root):
    """A Llama/Gemma-style tokenizer (`▁` word marks, `<s>` prefix, their decoder: `▁` -> space, byte fallback):
    the grammar works on its pieces too."""
    from tokenizers import decoders
    from formats_support import corpus, llama_style

    tok = llama_style(corpus([tiny_dialogue()]) + ["北京酒店 经济型 豪华型 推荐 评分"] * 5, vocab_size=400)
    tok.backend_tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                                       decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    fmt = FORMATS["llama2"]
    gen = OpeningGenerator(tiny_llama(len(tok)), tok, fmt, config=GenerationConfig(
        max_new_tokens=MAX_NEW, max_prompt_tokens=8192, constrained=True, batch_size=4))
    gen.opener_ids = tok.encode("search:", add_special_tokens=False)
    preds = gen.predict(histories()[:2])
    for p in preds:
        assert isinstance(p.parsed.turn, Call) and not p.parsed.malformed, p.raw
        assert argument_problems(HOTEL_TOOL, p.parsed.turn.arguments) == [], p.raw
    constraint = gen.constraint
    body = "\n" + '{\n    "facilities": [\n        "早餐服务"\n    ],\n    "type": "经济型"\n}'
    assert accepts(constraint, body)
    assert not accepts(constraint, body.replace("经济型", "便宜型"))


def test_unreadable_tokenizer_is_a_clear_error():
    from formats_support import corpus, llama_style

    tok = llama_style(corpus([tiny_dialogue()]), vocab_size=300)  # a bare Metaspace decoder
    with pytest.raises(ToolTuneError, match="llguidance cannot read this tokenizer"):
        Generator(torch.nn.Linear(1, 1), tok, FORMATS["llama2"], config=GenerationConfig(constrained=True))

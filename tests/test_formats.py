"""Chat formats: golden renderings, call round trips over the course data, parse fuzzing, labels vs trained spans."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from formats_support import (GEMMA_LIKE, QWEN_LIKE, ChatGLM3Like, byte_bpe, corpus, llama_style, seed_dialogues,
                             tiny_dialogue, with_template)
from tooltune.dialogue import Assistant, Call, Dialogue, User
from tooltune.formats import (BOS, EOS, FORMATS, IGNORE_INDEX, ParsedTurn, encode, ensure_special_tokens, show)
from tooltune.formats.base import segment_ids

GOLDEN = Path(__file__).parent / "golden"
# (golden name, format, template): chat_template is shown with a tool-aware and a tool-less template
VARIANTS = [("chatglm2", "chatglm2", None), ("chatglm3", "chatglm3", None), ("llama2", "llama2", None),
            ("chat_template_qwen", "chat_template", QWEN_LIKE), ("chat_template_gemma", "chat_template", GEMMA_LIKE)]
SPECIALS = {QWEN_LIKE: ["<|im_start|>", "<|im_end|>"], GEMMA_LIKE: ["<start_of_turn>", "<end_of_turn>"]}


@pytest.fixture(scope="session")
def dialogues(data_root: Path) -> list[Dialogue]:
    return seed_dialogues(data_root)


@pytest.fixture(scope="session")
def bpe(dialogues):
    return byte_bpe(corpus(dialogues[:150]))


@pytest.fixture(scope="session")
def llama_tok(dialogues):
    return llama_style(corpus(dialogues[:150]))


def fmt_for(fmt: str, template: str | None, base):
    """The format, bound to a copy of `base` carrying `template` where the format is chat_template."""
    if template is None:
        return FORMATS[fmt], base
    tok = with_template(copy.deepcopy(base), template, SPECIALS[template])
    return FORMATS[fmt].for_tokenizer(tok), tok


def plain(segments) -> str:
    """What the model sees or writes, as text: placeholders for tokenizer-specific tokens left out."""
    return "".join(s.text for s in segments if s.text not in (BOS, EOS))


# ---- golden text ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["all", "last"])
@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_golden(golden, fmt, template, policy, dialogues, bpe, update_golden):
    chat, _ = fmt_for(fmt, template, bpe)
    parts = []
    for label, dialogue, observation in (("tiny", tiny_dialogue(), "full"), ("0001", dialogues[0], "compact")):
        samples = chat.render(dialogue, policy=policy, observation=observation)
        for k, sample in enumerate(samples):
            parts.append(f"##### {label} observation={observation} sample {k + 1}/{len(samples)}\n{show(sample)}")
    parts.append(f"##### prompt after the first user turn of tiny\n{show(chat.prompt(tiny_dialogue().turns[:1], ()))}")
    text = "\n".join(parts) + "\n"
    path = GOLDEN / f"{golden}.{policy}.txt"
    if update_golden:  # a rewrite is never a pass: the run fails, and the diff is reviewed before committing
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"--update-golden wrote {path} ({'changed' if changed else 'unchanged'}): review `git diff "
                    f"tests/golden`, then run the tests without --update-golden")
    assert path.exists(), f"{path} missing: run `pytest --update-golden` and review it"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs: review, then `pytest --update-golden`"


# ---- anchors: one course sample per format, its rendering written by hand -------------------------------------

ANCHORS = GOLDEN / "anchors"


def course_record(data_root: Path) -> tuple[Dialogue, list]:
    """The course's first test turn sample (test.llama2.jsonl line 1: a user turn, then the search to predict) as a
    dialogue, and the tools of the course's test.chatglm3.jsonl (line 1) as the file holds them."""
    split = data_root / "hotel/v3_chatglm3_llama2"
    record = json.loads((split / "test.llama2.jsonl").read_text(encoding="utf-8").splitlines()[0])
    [user], response = json.loads(record["context"]), json.loads(record["response"])
    assert user["role"] == "user" and response["role"] == "search"
    tools = json.loads(json.loads((split / "test.chatglm3.jsonl").read_text(encoding="utf-8").splitlines()[0])["tools"][0])
    return Dialogue((User(user["content"]), Call(response["arguments"]))), tools


def hand_written(name: str, tools: list) -> str:
    """An anchor file's text: its `# ` header lines (where it comes from) left out, `{COURSE_TOOLS}` replaced by the
    course file's tools as JSON with indent 4, and the file's final newline left out."""
    lines = (ANCHORS / f"{name}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    text = "".join(line for line in lines if not line.startswith("# ")).removesuffix("\n")
    return text.replace("{COURSE_TOOLS}", json.dumps(tools, indent=4, ensure_ascii=False))


@pytest.mark.parametrize("golden,fmt,template", [v for v in VARIANTS if v[0] != "chat_template_gemma"])
def test_a_course_sample_renders_as_written_by_hand(golden, fmt, template, data_root, bpe):
    chat, _ = fmt_for(fmt, template, bpe)
    dialogue, tools = course_record(data_root)
    if fmt != "chatglm3":  # only ChatGLM3's system message is the course's own; the others are shown without tools
        dialogue = Dialogue(dialogue.turns, tools=())
    assert [t.to_dict() for t in dialogue.tools] == tools[:len(dialogue.tools)]
    [sample] = chat.render(dialogue, policy="last")
    assert show(sample) == hand_written(golden, tools)


# ---- round trips -----------------------------------------------------------------------------------------------

def course_calls(data_root: Path) -> list[Call]:
    """Every call of the course's v3 split files (train/dev/test.chatglm3.jsonl): `tool` turns' parameters."""
    calls = []
    for split in ("train", "dev", "test"):
        path = data_root / "hotel/v3_chatglm3_llama2" / f"{split}.chatglm3.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line)["conversations"]:
                if turn["role"] == "tool":
                    calls.append(Call(turn["parameters"], name=turn["name"]))
    return calls


def generated_text(chat, dialogue: Dialogue) -> str:
    """What the model writes for the dialogue's last turn: its trained spans (stop token included, eos left out)."""
    sample = chat.render(dialogue, policy="last")[-1]
    return "".join(s.text for s in sample if s.trainable and s.text != EOS)


@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_parse_inverts_render_for_every_course_call(golden, fmt, template, data_root, dialogues, bpe):
    chat, _ = fmt_for(fmt, template, bpe)
    calls = course_calls(data_root) + [c for d in dialogues for c in d.calls]
    assert len(calls) > 6000  # 2452 in the v3 split files, 3641 in the raw seed dialogues
    distinct = {json.dumps([c.name, c.arguments], ensure_ascii=False): c for c in calls}  # 1964: same text, same test
    for call in distinct.values():
        parsed = chat.parse(generated_text(chat, Dialogue((User("请帮我找酒店"), call))))
        assert parsed.turn == call and not parsed.malformed, (call, parsed)
        assert [type(v) for v in parsed.turn.arguments.values()] == [type(v) for v in call.arguments.values()]


@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_parse_inverts_render_for_replies(golden, fmt, template, dialogues, bpe):
    chat, _ = fmt_for(fmt, template, bpe)
    for dialogue in dialogues[:300]:
        for i, turn in enumerate(dialogue.turns):
            if isinstance(turn, Assistant):
                parsed = chat.parse(generated_text(chat, Dialogue(dialogue.turns[:i + 1])))
                assert parsed.turn == Assistant(turn.content.strip()) and not parsed.malformed


NEAR_MISSES = ["search:", "search:\n{", "assistant:", "search_hotels\n{", "search_hotels\n", "\n",
               "<|assistant|>search_hotels\n```python\ntool_call(", "<|assistant|>", "<|observation|>",
               "\n我需要使用search_hotels工具来查询酒店", "<tool_call>", "<tool_call>{\"name\": 1", '{"name": "x", ',
               "```python\n", "tool_call(**{", "[Round 1]"]


@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_parse_never_raises(golden, fmt, template, bpe):
    chat, _ = fmt_for(fmt, template, bpe)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(st.sampled_from(NEAR_MISSES), st.text(max_size=30)), max_size=6))
    def check(pieces):
        parsed = chat.parse("".join(pieces))
        assert isinstance(parsed, ParsedTurn) and isinstance(parsed.turn, (Call, Assistant))

    check()


@pytest.mark.parametrize("fmt,text", [
    ("llama2", "search:\n{\"type\": \"经济型\""), ("chatglm2", "search_hotels\n{\"type\": "),
    ("chatglm3", "\n我需要使用search_hotels工具来查询酒店"), ("chatglm3", "<|assistant|>search_hotels\n```python\ntool_call(type=\n```"),
    ("chatglm3", "search_hotels\n```python\nprint(1)\n```")])
def test_broken_calls_are_malformed_calls(fmt, text):
    parsed = FORMATS[fmt].parse(text)
    assert isinstance(parsed.turn, Call) and parsed.malformed and parsed.raw == text


def test_chat_template_broken_call_is_malformed(bpe):
    chat, _ = fmt_for("chat_template", QWEN_LIKE, bpe)
    parsed = chat.parse('<tool_call>\n{"name": "search_hotels", "arguments": {"type": \n</tool_call>')
    assert isinstance(parsed.turn, Call) and parsed.malformed
    ok = chat.parse('<tool_call>{"name": "search_hotels", "arguments": "{\\"type\\": \\"经济型\\"}"}</tool_call>')
    assert ok.turn == Call({"type": "经济型"}) and not ok.malformed


# ---- training text vs inference text ---------------------------------------------------------------------------

@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_prompt_is_what_training_shows_before_each_model_turn(golden, fmt, template, dialogues, bpe):
    """Train/inference consistency, as text and as token ids: the prompt for turn i is exactly the context the
    model was trained with before turn i, and what it was trained to write follows."""
    chat, tok = fmt_for(fmt, template, copy.deepcopy(bpe))
    ensure_special_tokens(tok, chat.special_tokens)
    for dialogue in [tiny_dialogue()] + dialogues[:20]:
        samples = chat.render(dialogue)
        sample_ids = [encode(s, tok).input_ids for s in samples]
        for i, turn in enumerate(dialogue.turns):
            if not isinstance(turn, (Call, Assistant)):
                continue
            segments = chat.prompt(dialogue.turns[:i], dialogue.tools)
            prompt, ids = plain(segments), encode(segments, tok).input_ids
            target = generated_text(chat, Dialogue(dialogue.turns[:i + 1], tools=dialogue.tools))
            assert any(plain(s).startswith(prompt + target) for s in samples), (golden, i)
            assert any(full[:len(ids)] == ids for full in sample_ids), (golden, i)


# ---- labels --------------------------------------------------------------------------------------------------

TOKENIZERS = ["byte_bpe", "llama_style", "chatglm3_like"]


def make_tokenizer(kind: str, bpe, llama_tok):
    if kind == "chatglm3_like":
        return ChatGLM3Like(bpe)
    return copy.deepcopy(bpe if kind == "byte_bpe" else llama_tok)


def trained_runs(ex) -> list[list[int]]:
    """The maximal runs of consecutive trained positions, as their input ids."""
    runs: list[list[int]] = []
    for k, (i, label) in enumerate(zip(ex.input_ids, ex.labels)):
        if label == IGNORE_INDEX:
            continue
        if k and ex.labels[k - 1] != IGNORE_INDEX:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def trainable_text_runs(sample, tok) -> list[str]:
    """The maximal runs of consecutive trainable (non-empty) segments, as text (the EOS placeholder: eos's text)."""
    runs: list[str] = []
    previous = False
    for seg in (s for s in sample if s.text):
        if seg.trainable:
            text = getattr(tok, "eos_token", EOS) if seg.text == EOS else seg.text
            if previous:
                runs[-1] += text
            else:
                runs.append(text)
        previous = seg.trainable
    return runs


# chat templates carry their own special tokens: checked on the byte-level tokenizer only
@pytest.mark.parametrize("golden,fmt,template,kind", [v + (k,) for v in VARIANTS for k in TOKENIZERS
                                                      if v[2] is None or k == "byte_bpe"])
def test_labels_cover_exactly_the_trainable_spans(golden, fmt, template, kind, dialogues, bpe, llama_tok):
    tok = make_tokenizer(kind, bpe, llama_tok)
    chat, tok = fmt_for(fmt, template, tok) if template else (FORMATS[fmt], tok)
    ensure_special_tokens(tok, chat.special_tokens)
    for dialogue in (tiny_dialogue(), dialogues[1]):
        for policy in ("all", "last"):
            for sample in chat.render(dialogue, policy=policy):
                ex = encode(sample, tok)
                per_segment = segment_ids(tok, sample)
                # Without segment_ids: a label is its input id or ignored, and each run of trained positions decodes
                # to a run of trainable segments' text (so no trained span starts, ends or breaks off elsewhere).
                assert len(ex.input_ids) == len(ex.labels)
                assert all(label in (IGNORE_INDEX, i) for i, label in zip(ex.input_ids, ex.labels))
                assert ex.trained_tokens == sum(label != IGNORE_INDEX for label in ex.labels) > 0
                id_runs, text_runs = trained_runs(ex), trainable_text_runs(sample, tok)
                assert len(id_runs) == len(text_runs)
                if kind != "chatglm3_like":
                    assert [tok.decode(r, skip_special_tokens=False) for r in id_runs] == text_runs
                for seg, ids in zip(sample, per_segment):  # each special token is exactly one id
                    if seg.special and seg.text != BOS:
                        assert len(ids) == 1
                if kind != "chatglm3_like":  # the text survives segment-wise encoding (no stray spaces)
                    text = "".join(s.text for s in sample if not s.special)
                    # a template writes its special tokens as text: compare with them kept
                    assert tok.decode(ex.input_ids, skip_special_tokens=template is None) == text


def test_trained_text_is_the_model_turns(bpe):
    tok = copy.deepcopy(bpe)
    sample = FORMATS["llama2"].render(tiny_dialogue())[0]
    ex = encode(sample, tok)
    trained = [i for i, label in zip(ex.input_ids, ex.labels) if label != IGNORE_INDEX]
    eos = tok.eos_token
    assert tok.decode(trained) == "".join(s.text.replace(EOS, eos) for s in sample if s.trainable)
    assert tok.decode(trained).count("assistant: ") == 2 and tok.decode(trained).count("search:") == 2


def test_chatglm3_role_tokens_go_through_convert_tokens_to_ids(bpe):
    tok = ChatGLM3Like(bpe)
    assert ensure_special_tokens(tok, FORMATS["chatglm3"].special_tokens) == []
    dialogue = tiny_dialogue()
    ex = encode(FORMATS["chatglm3"].render(dialogue)[0], tok)
    assert ex.input_ids[:2] == [tok.ROLES["[gMASK]"], tok.ROLES["sop"]] and ex.input_ids[-1] == tok.eos_token_id
    assert ex.input_ids.count(tok.ROLES["<|user|>"]) == 3 and ex.input_ids.count(tok.ROLES["<|system|>"]) == 1
    # the course's shifted mask: the <|user|> after each reply, the <|observation|> after each call, the final eos
    trained_roles = [tok.convert_ids_to_tokens([i])[0] for i, label in zip(ex.input_ids, ex.labels)
                     if label != IGNORE_INDEX and i < tok.base]
    assert trained_roles == ["<|assistant|>", "<|observation|>", "<|user|>", "<|assistant|>", "<|observation|>",
                             "</s>"]


# ---- special tokens, truncation, policies -----------------------------------------------------------------------

def test_ensure_special_tokens_adds_missing_ones_once(bpe):
    tok = copy.deepcopy(bpe)
    before = len(tok)
    new = ensure_special_tokens(tok, FORMATS["chatglm3"].special_tokens)
    assert len(new) == 4 and len(tok) == before + 4 and all(i >= before for i in new)
    assert ensure_special_tokens(tok, FORMATS["chatglm3"].special_tokens) == []
    assert [len(tok.encode(t, add_special_tokens=False)) for t in FORMATS["chatglm3"].special_tokens] == [1] * 4


def test_missing_special_token_is_a_clear_error(bpe):
    from tooltune.errors import InputError

    with pytest.raises(InputError, match="ensure_special_tokens"):
        encode(FORMATS["chatglm3"].render(tiny_dialogue())[0], copy.deepcopy(bpe))


def test_truncation_keeps_the_trained_tail_and_whole_segments(dialogues, bpe):
    from tooltune.formats import encode_all

    tok = copy.deepcopy(bpe)
    long = max(dialogues[:200], key=lambda d: len(d.turns))
    sample = FORMATS["llama2"].render(long)[0]
    whole = encode(sample, tok)
    cut = encode(sample, tok, max_length=len(whole.input_ids) - 40)
    assert 40 <= cut.truncated_tokens and len(cut.input_ids) <= len(whole.input_ids) - 40
    assert cut.input_ids[-10:] == whole.input_ids[-10:] and cut.labels[-10:] == whole.labels[-10:]
    per_segment = segment_ids(tok, sample)
    suffixes = [sum(per_segment[k:], []) for k in range(len(per_segment))]
    assert cut.input_ids in suffixes  # whole segments only (GPT-2 style: no prefix token)
    report = encode_all([sample, sample], tok, max_length=5)
    assert report.examples == [] and [i for i, _ in report.dropped] == [0, 1] and "max_length" in report.dropped[0][1]
    report = encode_all([sample], tok, max_length=len(whole.input_ids) - 40)
    assert report.truncated == [0] and len(report.examples) == 1


def test_truncation_keeps_the_prefix_token(dialogues, llama_tok):
    tok = copy.deepcopy(llama_tok)
    sample = FORMATS["llama2"].render(dialogues[2])[0]
    whole = encode(sample, tok)
    cut = encode(sample, tok, max_length=len(whole.input_ids) // 2)
    assert cut.input_ids[0] == tok.bos_token_id and cut.truncated_tokens > 0


@pytest.mark.parametrize("golden,fmt,template", VARIANTS)
def test_policy_last_trains_only_the_last_model_turn(golden, fmt, template, bpe):
    chat, _ = fmt_for(fmt, template, bpe)
    dialogue = tiny_dialogue()
    last = chat.render(dialogue, policy="last")
    assert len(last) == 1
    trained = "".join(s.text for s in last[0] if s.trainable)
    assert "不客气" in trained and "推荐甲酒店" not in trained and "豪华型" not in trained
    every = chat.render(dialogue, policy="all")
    trained_all = "".join(s.text for sample in every for s in sample if s.trainable)
    assert "推荐甲酒店" in trained_all and "豪华型" in trained_all
    assert len(every) == (4 if fmt == "chatglm2" else 1)


def test_compact_observation_drops_unused_fields_and_costs_less():
    from tooltune.formats.base import records_json

    records = tiny_dialogue().turns[2].records
    compact = json.loads(records_json(records, "compact"))
    assert compact == [{"name": "甲酒店", "type": "经济型", "price": 280.0, "rating": 4.6}]
    assert len(records_json(records, "compact")) < len(records_json(records, "full"))


def test_bad_policy_and_observation_are_input_errors():
    from tooltune.errors import InputError

    with pytest.raises(InputError, match="policy"):
        FORMATS["llama2"].render(tiny_dialogue(), policy="first")
    with pytest.raises(InputError, match="observation"):
        FORMATS["llama2"].render(tiny_dialogue(), observation="tiny")
    with pytest.raises(InputError, match="user or result"):
        FORMATS["llama2"].prompt(tiny_dialogue().turns[:2], ())


# ---- chat templates ------------------------------------------------------------------------------------------

def test_chat_template_without_tool_support_writes_tools_as_text(bpe):
    chat, _ = fmt_for("chat_template", GEMMA_LIKE, bpe)
    assert not chat.native_tools and chat.stop_strings == ("<end_of_turn>",)
    text = plain(chat.render(tiny_dialogue())[0])
    assert "search_hotels" in text.split("<start_of_turn>model")[0]  # the tools, in the first user turn
    assert "<start_of_turn>user\n<tool_response>" in text


def test_chat_template_refusals_are_input_errors(bpe):
    from formats_support import FORGETFUL
    from tooltune.errors import InputError

    tok = with_template(copy.deepcopy(bpe), FORGETFUL, [])
    with pytest.raises(InputError, match="prefix"):
        FORMATS["chat_template"].for_tokenizer(tok).render(tiny_dialogue())
    bare = copy.deepcopy(bpe)
    bare.chat_template = None
    with pytest.raises(InputError, match="no chat template"):
        FORMATS["chat_template"].for_tokenizer(bare)
    with pytest.raises(InputError, match="needs a tokenizer"):
        FORMATS["chat_template"].render(tiny_dialogue())
    gemma, _ = fmt_for("chat_template", GEMMA_LIKE, bpe)
    with pytest.raises(InputError, match="alternate"):
        gemma._text([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], (), False)


@pytest.mark.parametrize("text,expected", [
    ("\n我需要使用search_hotels工具来查询酒店<|assistant|>search_hotels\n```python\ntool_call(type='经济型')\n```"
     "<|observation|>", Call({"type": "经济型"})),
    ("search_hotels\n{\"type\": \"经济型\"}", Call({"type": "经济型"})),  # JSON arguments are read too
    ("\n好的，祝您入住愉快<|user|>", Assistant("好的，祝您入住愉快")),
])
def test_chatglm3_reads_generated_text(text, expected):
    parsed = FORMATS["chatglm3"].parse(text)
    assert parsed.turn == expected and not parsed.malformed


def test_chatglm3_reply_without_its_newline_is_a_malformed_reply():
    parsed = FORMATS["chatglm3"].parse("好的\n还有别的需要吗")
    assert parsed.turn == Assistant("好的\n还有别的需要吗") and parsed.malformed


NO_SYSTEM = """\
{%- for m in messages %}
{%- if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}
[{{ m.role }}] {{ m.content }}</turn>
{% endfor %}
{%- if add_generation_prompt %}[assistant] {% endif %}"""


def test_chat_template_without_system_role_puts_tools_in_the_first_user_turn(bpe):
    tok = with_template(copy.deepcopy(bpe), NO_SYSTEM, [])
    chat = FORMATS["chat_template"].for_tokenizer(tok)
    assert not chat.native_tools and not chat.system_role and chat.stop_strings == ("</turn>",)
    sample = chat.render(tiny_dialogue())[0]
    assert plain(sample).startswith("[user] You can call the following tools.")
    assert "[[<tool_call>{\"name\": \"search_hotels\"" in show(sample)
    call = tiny_dialogue().turns[1]
    assert chat.parse(generated_text(chat, Dialogue(tiny_dialogue().turns[:2]))).turn == call


@pytest.mark.parametrize("text,expected", [
    ("assistant: 好的，已为您找到。\n\n[Round 2]\n\nuser: 谢谢", Assistant("好的，已为您找到。")),
    ('search:\n{\n    "type": "经济型"\n}\n\n[Round 1]\n\nreturn:\n[]', Call({"type": "经济型"})),
])
def test_llama2_reads_a_turn_up_to_the_next_round(text, expected):
    """A model that runs on writes the next round; the turn ends at "\\n\\n[Round" (values written here by hand)."""
    parsed = FORMATS["llama2"].parse(text)
    assert parsed.turn == expected and not parsed.malformed

"""`tooltune data show`: trained spans marked, token counts with a local tokenizer, clear errors (exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from formats_support import QWEN_LIKE, byte_bpe, tiny_dialogue, with_template
from tooltune.cli import main
from tooltune.dialogue import dialogue_to_seed


@pytest.fixture()
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(dialogue_to_seed(tiny_dialogue()), ensure_ascii=False), encoding="utf-8")
    return path


def test_show_marks_trained_spans(seed_file, capsys):
    assert main(["data", "show", str(seed_file), "--format", "llama2", "--policy", "last"]) == 0
    out = capsys.readouterr().out
    assert out.count("[[") == 1 and "[[assistant: 不客气。" in out and "\x1b[" not in out
    assert main(["data", "show", str(seed_file), "--format", "chatglm2", "--color", "always"]) == 0
    out = capsys.readouterr().out
    assert out.count("##### ") == 4 and "\x1b[1;32m" in out


def test_show_course_file_with_index(course_dir, capsys):
    assert main(["data", "show", str(course_dir / "test.chatglm3.jsonl"), "--format", "chatglm3", "--index", "3",
                 "--observation", "compact"]) == 0
    out = capsys.readouterr().out
    assert "test.chatglm3.jsonl:4" in out and "<|observation|>" in out and "hotel_id" not in out


def test_show_with_a_local_tokenizer_counts_tokens(seed_file, tmp_path, capsys):
    tok = with_template(byte_bpe(["找一家酒店 search_hotels 推荐"] * 5, vocab_size=300), QWEN_LIKE,
                        ["<|im_start|>", "<|im_end|>"])
    tok.save_pretrained(tmp_path / "tok")
    assert main(["data", "show", str(seed_file), "--format", "chat_template", "--tokenizer", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    assert "[[<tool_call>" in out
    # The counts, against the tokenizer's own calls on each rendered segment (a special token is one id).
    from tooltune.formats import FORMATS

    fmt = FORMATS["chat_template"].for_tokenizer(tok)
    [sample] = fmt.render(tiny_dialogue())
    lengths = [1 if seg.special else len(tok(seg.text, add_special_tokens=False)["input_ids"]) for seg in sample]
    total, trained = sum(lengths), sum(n for n, seg in zip(lengths, sample) if seg.trainable)
    assert 0 < trained < total
    assert re.search(r", (\d+) tokens, (\d+) trained\)", out).groups() == (str(total), str(trained))


@pytest.mark.parametrize("argv,message", [
    (["--format", "llama2", "--index", "5"], "out of range"),
    (["--format", "chat_template"], "--tokenizer"),
    (["--format", "llama2", "--tokenizer", "/nonexistent/dir"], "not a directory"),
])
def test_show_errors_exit_2(seed_file, capsys, argv, message):
    assert main(["data", "show", str(seed_file)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

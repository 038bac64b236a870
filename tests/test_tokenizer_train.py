"""The domain corpus (no dev/test text) and the byte-level BPE trained on it."""

from __future__ import annotations

import json

import pytest

from tooltune import cli
from tooltune.errors import ToolTuneError
from tooltune.pretrain.tokenizer import ROLE_TOKENS, TokenizerConfig, save_tokenizer, train_tokenizer
from tests.conftest import read_jsonl

CORPUS = ["你好，我想找一家提供叫醒服务的经济型酒店。", "为您推荐北京饭店，价格是300元，评分4.5分。",
          "这家酒店有叫醒服务吗？有的，提供叫醒服务。", '{"facilities": ["叫醒服务"], "price_range_upper": 500}'] * 4


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    out = save_tokenizer(train_tokenizer(CORPUS, TokenizerConfig(vocab_size=400)), tmp_path_factory.mktemp("tok"))
    return AutoTokenizer.from_pretrained(out)


def test_role_and_control_tokens_are_single_tokens(saved_tokenizer):
    tok = saved_tokenizer
    text = "<|system|>工具<|user|>你好<|assistant|>search_hotels\n{}<|observation|>[]<|assistant|>好的<|eos|>"
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    for token in ROLE_TOKENS + ("<|eos|>",):
        assert pieces.count(token) == text.count(token)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|eos|>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3


@pytest.mark.parametrize("text", ["你好，我想找一家提供叫醒服务的经济型酒店。",
                                  "没见过的字：龘靐齉，emoji 🏨，数字 1234.5",
                                  '{"name": "北京饭店", "rating_range_lower": 4.5}\n第二行'])
def test_chinese_and_unseen_text_round_trips(saved_tokenizer, text):
    ids = saved_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert saved_tokenizer.unk_token_id not in ids
    assert saved_tokenizer.decode(ids) == text


def test_frequent_domain_phrases_become_few_pieces(saved_tokenizer):
    # 12 bytes of UTF-8; seen 12 times in the corpus, so merged into one or two pieces.
    assert len(saved_tokenizer("叫醒服务", add_special_tokens=False)["input_ids"]) <= 2


def test_too_small_vocabulary_is_a_clear_error():
    with pytest.raises(ToolTuneError, match="too small"):
        TokenizerConfig(vocab_size=100)


def test_cli_trains_from_corpus_files_and_reports_missing_ones(tmp_path, capsys):
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    assert cli.main(["pretrain", "tokenizer", "--corpus", str(corpus), "--vocab-size", "300", "--out",
                     str(out)]) == 0
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<|observation|>") is not None
    assert cli.main(["pretrain", "tokenizer", "--corpus", str(tmp_path / "nope.txt"), "--vocab-size", "300",
                     "--out", str(out)]) == 2
    assert "nope.txt: corpus file does not exist" in capsys.readouterr().err


# --- the default corpus, on the real data ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_lines(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    assert cli.main(["pretrain", "corpus", "--out", str(out), "--data-dir", str(data_root)]) == 0
    return out.read_text(encoding="utf-8").splitlines()


def _utterances(path):
    return {t["content"].strip() for row in read_jsonl(path) for t in row["conversations"]
            if t["role"] in ("user", "assistant")}


def test_corpus_has_no_dev_or_test_text(corpus_lines, course_dir, data_root):
    train = _utterances(course_dir / "train.chatglm3.jsonl")
    held_out = (_utterances(course_dir / "dev.chatglm3.jsonl") | _utterances(course_dir / "test.chatglm3.jsonl"))
    distinctive = {u for u in held_out - train if len(u) >= 8}
    assert len(distinctive) > 500
    # A document is its utterances joined by spaces: a whole utterance sits between spaces (or line ends).
    # (Plain substrings would also find generic phrases inside longer, different utterances.)
    text = "\n".join(f" {line} " for line in corpus_lines)
    assert [u for u in distinctive if f" {u} " in text] == []
    # The raw files the course put in test: none of their first user turns is in the corpus, unless train has it.
    split_map = json.loads((data_root / "hotel/raw/split_map.json").read_text(encoding="utf-8"))["map"]
    test_files = [name for name, split in split_map.items() if split == "test"]
    firsts = {json.loads((data_root / "hotel/raw/enhanced_hotel_data" / name).read_text(encoding="utf-8"))[0]
              ["content"].strip() for name in test_files}
    assert [u for u in firsts - train if f" {u} " in text] == []


def test_corpus_keeps_train_dialogues_crosswoz_and_hotel_texts(corpus_lines, course_dir, hotel_db_json):
    text = "\n".join(corpus_lines)
    first_train = read_jsonl(course_dir / "train.chatglm3.jsonl")[0]["conversations"][0]["content"]
    assert first_train in text
    assert "北京贵都大酒店" in text and "叫醒服务" in text   # hotel DB names and facilities
    assert any("餐馆" in line for line in corpus_lines)       # CrossWOZ restaurant dialogues
    assert len(corpus_lines) > 8000 and all(line.strip() for line in corpus_lines)

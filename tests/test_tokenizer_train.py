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


# --- the default corpus, on a small data dir written here -----------------------------------------------------

TRAIN_TEXT, DEV_TEXT, TEST_TEXT = "训练集里的一句很长的话。", "开发集里独有的一句很长的话。", "测试集里独有的一句很长的话。"


def _chatglm3(*utterances):
    return json.dumps({"tools": [], "conversations": [{"role": "user", "content": u} for u in utterances]},
                      ensure_ascii=False) + "\n"


def _write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def small_data(tmp_path):
    split = tmp_path / "hotel/v3_chatglm3_llama2"
    split.mkdir(parents=True)
    for name, text in (("train", TRAIN_TEXT), ("dev", DEV_TEXT), ("test", TEST_TEXT)):
        (split / f"{name}.chatglm3.jsonl").write_text(_chatglm3(text, "好的，谢谢。"), encoding="utf-8")
    raw = tmp_path / "hotel/raw"
    seed = lambda text: [{"role": "user", "content": text}, {"role": "search", "arguments": {"type": "经济型"}}]
    _write_json(raw / "enhanced_hotel_data/0001.json", seed(TRAIN_TEXT))
    _write_json(raw / "enhanced_hotel_data/0002.json", seed(DEV_TEXT))          # "unused", but holds dev text
    _write_json(raw / "enhanced_hotel_data/0003.json", seed("原稿里的话，测试集改写过。"))  # test by split_map
    _write_json(raw / "enhanced_more/again.json", [seed(TRAIN_TEXT)])          # the same document as 0001
    _write_json(raw / "split_map.json", {"map": {"0001.json": "train", "0002.json": "unused", "0003.json": "test"}})
    _write_json(tmp_path / "hotel/agiclass_hotel_chatbot/dialog.json",
                [[{"role": "usr", "content": "原稿里的话，测试集改写过。"}], [{"role": "usr", "content": "好的，谢谢。"}]])
    attrs = {"名称": "测试大酒店", "酒店类型": "经济型", "地址": "北京某路1号", "地铁": "某站", "电话": "010-1",
             "酒店设施": ["叫醒服务"], "价格": 300, "评分": 4.5}
    _write_json(tmp_path / "crosswoz/hotel_db.json", [["测试大酒店", attrs]])
    return tmp_path


def test_corpus_builder_excludes_dev_and_test_and_counts_it(small_data):
    from tooltune.pretrain.corpus import build_corpus

    documents, report = build_corpus(small_data)
    text = "\n".join(d.text for d in documents)
    assert TRAIN_TEXT in text and "测试大酒店" in text and '{"type": "经济型"}' in text
    assert DEV_TEXT not in text and TEST_TEXT not in text and "原稿里的话" not in text
    # 0002 by its dev text, 0003 by split_map; dialog.json's first dialogue by the raw test file's text.
    assert report.held_out == {"raw/enhanced_hotel_data": 2, "dialog.json": 1}
    assert report.kept == {"raw/enhanced_hotel_data": 1, "dialog.json": 1, "course train": 1, "hotel_db.json": 1}
    assert report.duplicates == 1          # enhanced_more/again.json repeats 0001
    assert any(line.startswith("total kept: 4") for line in report.lines())


def test_corpus_builder_names_the_file_of_a_malformed_dialogue(small_data):
    from tooltune.errors import InputError
    from tooltune.pretrain.corpus import build_corpus

    _write_json(small_data / "hotel/raw/enhanced_more/named.json", [[{"role": "user", "text": "no content key"}]])
    with pytest.raises(InputError, match=r"enhanced_more/named.json\[0\]: unexpected dialogue structure"):
        build_corpus(small_data)


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

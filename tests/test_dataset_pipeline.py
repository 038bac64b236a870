"""`tooltune data build` end to end on a slice of the shared data, and the optional LLM rewriting."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import read_jsonl
from tooltune.dataset.items import make_item
from tooltune.dataset.llm import LLMConfig, make_client, rewrite_items
from tooltune.cli import main
from tooltune.dialogue import Call, User, dialogue_from_seed

FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "report.md", "balance.png")
QUICK = ["--limit", "60", "--named", "10", "--price-upper", "10"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root):
    outs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path_factory.mktemp(name)
        assert main(["data", "build", "--out", str(out), "--seed", seed, "--data-dir", str(data_root)] + QUICK) == 0
        outs[name] = out
    return outs


def test_same_seed_same_bytes_other_seed_other_split(built):
    for f in FILES:
        assert (built["a"] / f).read_bytes() == (built["b"] / f).read_bytes(), f
    assert (built["a"] / "train.jsonl").read_bytes() != (built["c"] / "train.jsonl").read_bytes()


def test_outputs_are_seed_dialogues_in_disjoint_splits(built):
    seen = {}
    for split in ("train", "dev", "test"):
        rows = read_jsonl(built["a"] / f"{split}.jsonl")
        assert rows
        for row in rows:
            dialogue = dialogue_from_seed(row)  # role order checked
            assert isinstance(dialogue.turns[0], User) and dialogue.calls
            key = json.dumps(row, ensure_ascii=False)
            assert key not in seen, f"a dialogue in {seen.get(key)} and {split}"
            seen[key] = split
    sizes = {s: len(read_jsonl(built["a"] / f"{s}.jsonl")) for s in ("train", "dev", "test")}
    total = sum(sizes.values())
    assert abs(sizes["train"] - 0.8 * total) <= 1.5 and abs(sizes["dev"] - 0.1 * total) <= 1.5


def test_report_counts_augmentations_removals_and_balance(built):
    report = (built["a"] / "report.md").read_text(encoding="utf-8")
    for section in ("## Sources", "## Augmentation", "## Calls using each argument key", "## Turn types",
                    "## Dialogue lengths", "## Facility values", "## Removed dialogues", "## Shortened dialogues"):
        assert section in report
    assert "| named | 10 |" in report and "| price_upper | 10 |" in report
    # removals are listed with their source file and index (the val zip's first 60 dialogues lose some parts)
    assert "| crosswoz/val.json.zip | " in report.split("## Removed dialogues")[1]
    assert (built["a"] / "balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_augment_adds_nothing(tmp_path, data_root):
    out = tmp_path / "plain"
    assert main(["data", "build", "--out", str(out), "--data-dir", str(data_root), "--no-augment", "--no-zips",
                 "--limit", "30"]) == 0
    rows = [r for s in ("train", "dev", "test") for r in read_jsonl(out / f"{s}.jsonl")]
    assert len(rows) <= 30
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| - | 0 |" in report.split("## Augmentation")[1].split("## Splits")[0]


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "build", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nope")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["data", "build", "--out", str(tmp_path), "--ratios", "8:2"]) == 2
    assert main(["data", "build", "--out", str(tmp_path), "--llm-base-url", "http://127.0.0.1:9"]) == 2
    assert main(["data", "build", "--out", str(tmp_path), "--near-threshold", "0"]) == 2


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Answers chat completions: rewrites keep the number unless the prompt contains 丢数字."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"].split("\n", 1)[1]
        reply = "随便找个酒店吧" if "丢数字" in text else "麻烦给我找个" + text
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_rewrite_keeps_only_rewrites_that_keep_the_arguments():
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = LLMConfig(f"http://127.0.0.1:{server.server_port}/v1", "fake", p=1.0)
        items = [make_item([User("300元以上的酒店"), Call({"price_range_lower": 300})], "s", "0"),
                 make_item([User("丢数字 400元以上"), Call({"price_range_lower": 400})], "s", "1")]
        out, counts = rewrite_items(items, make_client(config), config, seed=0)
    finally:
        server.shutdown()
    assert out[0].dialogue.turns[0].content == "麻烦给我找个300元以上的酒店" and out[0].augments == ("llm",)
    assert out[1].dialogue.turns[0].content == "丢数字 400元以上"
    assert counts["llm rewritten"] == 1 and counts["llm rejected"] == 1


def test_llm_failures_are_counted_not_fatal():
    config = LLMConfig("http://127.0.0.1:9/v1", "fake", p=1.0, timeout=2)
    items = [make_item([User("300元以上的酒店"), Call({"price_range_lower": 300})], "s", "0")]
    out, counts = rewrite_items(items, make_client(config), config, seed=0)
    assert out == items and counts["llm failed"] == 1


def test_token_lengths_use_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tooltune.dataset.pipeline import token_counter
    from tooltune.errors import ToolTuneError

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    tok.train_from_iterator(["酒店价格评分"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    count = token_counter(str(tmp_path / "tok"))
    assert count("酒店评分") == 4 and count("") == 0
    with pytest.raises(ToolTuneError, match="not a directory"):
        token_counter(str(tmp_path / "missing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{", encoding="utf-8")
    with pytest.raises(ToolTuneError, match="cannot load"):
        token_counter(str(tmp_path / "broken"))

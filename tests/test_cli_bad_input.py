"""The README's promise for the commands that load models: bad input is one `tooltune: error:` line naming the file,
line or field, exit status 2, no traceback, and nothing written. (The data commands have their own tests in
test_hostile_input.py and test_datafiles_errors.py.)"""

from __future__ import annotations

import pytest

from tooltune.cli import main
from tooltune.train.tiny import save_tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model folder with its tokenizer: the commands get past loading to the input they are given."""
    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _bad_line_jsonl(tmp_path):
    path = tmp_path / "train.jsonl"
    good = '{"tools": [], "conversations": [{"role": "user", "content": "有酒店吗"}, {"role": "assistant", "content": "有"}]}'
    path.write_text(good + '\n{"conversations": [\n', encoding="utf-8")
    return path


def _config(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


CASES = {
    # name: (argv from (tmp_path, tiny model folder), what the one error line must contain)
    "train: config file missing": (lambda t, m: ["train", str(t / "nope.yaml")], "nope.yaml"),
    "train: YAML syntax": (lambda t, m: ["train", str(_config(t, "model:\n  path: [x\n"))], "run.yaml"),
    "train: unknown override key": (lambda t, m: ["train", "configs/lora.yaml", "method.rr=3"], "method.rr"),
    "train: value of the wrong type": (lambda t, m: ["train", "configs/lora.yaml", "train.lr=fast"], "train.lr"),
    "train: refused combination": (lambda t, m: ["train", "configs/lora.yaml", "method.name=prefix",
                                                 "method.layers=top:2"], "method.layers"),
    "train: a bad line in the training data": (
        lambda t, m: ["train", "configs/lora.yaml", f"model.path={m}", f"data.train={_bad_line_jsonl(t)}",
                      "data.dev=", "data.format=llama2", f"train.out={t / 'run'}"], "train.jsonl:2"),
    "train: model folder missing": (lambda t, m: ["train", "configs/lora.yaml", f"model.path={t / 'no-model'}",
                                                  f"train.out={t / 'run'}"], "no-model"),
    "eval: --batch-size 0": (lambda t, m: ["eval", str(m), "--data", str(_bad_line_jsonl(t)), "--out", str(t / "e"),
                                           "--format", "llama2", "--batch-size", "0"], "--batch-size"),
    "chat: not a run": (lambda t, m: ["chat", str(t)], "config.yaml"),
    "chat: --max-new-tokens 0": (lambda t, m: ["chat", str(m), "--format", "llama2", "--max-new-tokens", "0"],
                                 "--max-new-tokens"),
    "serve: port out of range": (lambda t, m: ["serve", str(m), "--format", "llama2", "--port", "70000"], "--port"),
    "serve: open address without a key": (lambda t, m: ["serve", str(m), "--format", "llama2", "--host", "0.0.0.0"],
                                          "--api-key"),
    "pretrain model: corpus missing": (lambda t, m: ["pretrain", "model", "--tokenizer", str(m), "--corpus",
                                                     str(t / "corpus.txt"), "--out", str(t / "g")], "corpus.txt"),
    "pretrain tokenizer: corpus not UTF-8": (
        lambda t, m: ["pretrain", "tokenizer", "--corpus", str(_bytes(t)), "--vocab-size", "300",
                      "--out", str(t / "tok")], "latin1.txt:2"),
    "demo: data dir not a directory": (lambda t, m: ["demo", "--data-dir", str(t / "none"), "--out", str(t / "d")],
                                       "--data-dir"),
    "demo: unknown base": (lambda t, m: ["demo", "--base", "no-such-model", "--out", str(t / "d")], "no-such-model"),
    "export: not a run": (lambda t, m: ["export", str(t), "--merge", str(t / "m")], "config.yaml"),
    "export: --gguf with an unknown --quant": (lambda t, m: ["export", str(t), "--gguf", str(t / "m.gguf"), "--quant",
                                                              "q4"], "--quant"),
    "export: --gguf of a folder that is not a run": (lambda t, m: ["export", str(t), "--gguf", str(t / "m.gguf")],
                                                     "config.yaml"),
    "model prepare: unknown alias": (lambda t, m: ["model", "prepare", "no-such-model"], "no-such-model"),
}


def _bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("一行\n".encode() + "caf\xe9\n".encode("latin-1"))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_error_line_and_exit_2(name, tmp_path, tiny, capsys, monkeypatch):
    argv, needle = CASES[name]
    monkeypatch.chdir(__import__("pathlib").Path(__file__).parents[1])  # configs/ is relative to the repository
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(argv(tmp_path, tiny))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tooltune: error:")]
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and p.name not in ("train.jsonl", "run.yaml", "latin1.txt")] == []

"""Loading for inference (`tooltune.runs`) and prompt limits of `tooltune.inference.Generator`."""

import json
from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.errors import InputError, ToolTuneError
from tooltune.dialogue import Call, Result, User
from tooltune.formats import get_format
from tooltune.inference import GenerationConfig, Generator
from tooltune.runs import load_for_inference
from tooltune.train.tiny import save_tiny_model, tiny_llama, tiny_tokenizer

CONFIGS = Path(__file__).parents[1] / "configs"


def test_a_pretraining_run_is_a_base_model(tmp_path):
    model_dir = save_tiny_model(tmp_path / "gpt", vocab_size=300)
    (model_dir / "config.yaml").write_text("method:\n  name: full\nmodel:\n  path: tok\n", encoding="utf-8")
    (model_dir / "run.json").write_text(json.dumps({"kind": "pretrain gpt2", "method": "full"}), encoding="utf-8")
    loaded = load_for_inference(model_dir, format="llama2")
    assert (loaded.method, loaded.format, loaded.model_name) == ("native", "llama2", "gpt")


def test_inference_goes_to_the_default_device_unless_told(tmp_path, monkeypatch):
    # A GPU machine must generate on its GPU (`tooltune eval`, `data select`, the server): the default device is
    # where the model lands. "meta" stands in for "cuda" here, which this machine lacks.
    import tooltune.runs

    model_dir = save_tiny_model(tmp_path / "gpt", vocab_size=300)
    assert next(load_for_inference(model_dir, format="llama2").model.parameters()).device.type == "cpu"
    monkeypatch.setattr(tooltune.runs, "default_device", lambda: "meta")
    assert next(load_for_inference(model_dir, format="llama2").model.parameters()).device.type == "meta"
    assert next(load_for_inference(model_dir, format="llama2", device="cpu").model.parameters()).device.type == "cpu"


def test_prompts_leave_room_for_the_reply_and_long_results_are_cut_not_dropped():
    tokenizer = tiny_tokenizer(vocab_size=300)
    model = tiny_llama(len(tokenizer))
    model.config.max_position_embeddings = 64
    generator = Generator(model, tokenizer, get_format("llama2"), config=GenerationConfig(max_new_tokens=8))
    long_result = Result([{"name": "hotel " * 100, "price": 300.0}])
    history = [User("hotel please"), Call({"name": "x"}), long_result]
    ids = generator.prompt_ids(history)
    assert len(ids) == 64 - 8 and generator.prompts_cut_inside == 1
    (pred,) = generator.predict([history])
    assert pred.new_tokens <= 8


def test_train_caps_max_length_at_the_model_positions(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)  # 512 positions
    rc = main(["train", str(CONFIGS / "lora.yaml"), f"model.path={model_dir}", "data.max_length=2048",
               f"data.train={tmp_path / 'missing.jsonl'}", f"train.out={tmp_path / 'run'}"])
    out = capsys.readouterr()
    assert "data.max_length=2048 capped at the 512 positions" in out.out
    assert rc == 2 and "missing.jsonl" in out.err  # then the missing training file is the error


def test_a_run_names_its_base_by_alias_and_its_data_relative_to_the_data_dir(tmp_path, monkeypatch):
    """A run shipped with the repository (bench/artifacts/) cannot name machine paths: its base is an alias, found
    where `tooltune model prepare` puts it, and its training file is relative to the data dir."""
    from tooltune import runs
    from tooltune.models import load
    from tooltune.train.tiny import save_tiny_model

    prepared = save_tiny_model(tmp_path / "cache" / "gemma3-270m")
    asked = []
    monkeypatch.setattr(load, "prepare_base", lambda name, **kw: asked.append(name) or prepared)
    run = tmp_path / "run"
    run.mkdir()
    assert runs.base_dir("gemma3-270m", run) == prepared and asked == ["gemma3-270m"]
    with pytest.raises(ToolTuneError, match="'no-such-model' is not a model folder here"):
        runs.base_dir("no-such-model", run)
    data = tmp_path / "data"
    (data / "hotel").mkdir(parents=True)
    (data / "hotel" / "train.jsonl").write_text("{}\n", encoding="utf-8")
    (run / "config.yaml").write_text("data:\n  train: hotel/train.jsonl\n", encoding="utf-8")
    monkeypatch.setenv("TOOLTUNE_DATA", str(data))
    assert runs.training_data(run) == data / "hotel" / "train.jsonl"
    monkeypatch.setenv("TOOLTUNE_DATA", str(tmp_path))
    with pytest.raises(InputError, match="is not a file here"):
        runs.training_data(run)


def test_a_run_without_a_tokenizer_uses_its_bases(tmp_path):
    from tooltune.runs import tokenizer_dir

    base = save_tiny_model(tmp_path / "base")
    run = tmp_path / "run"
    run.mkdir()
    assert tokenizer_dir(run, str(base)) == base
    (run / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    assert tokenizer_dir(run, str(base)) == run

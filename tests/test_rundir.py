"""The run directory's typed files (`tooltune.rundir`): run.json as `RunInfo`, config.yaml through the config loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooltune import rundir
from tooltune.errors import InputError
from tooltune.rundir import RunInfo

G7 = Path(__file__).parents[1] / "bench" / "artifacts" / "g7"


def test_the_shipped_g7_run_loads_with_every_key_it_has():
    info = rundir.read_info(G7)
    raw = json.loads((G7 / rundir.INFO).read_text(encoding="utf-8"))
    assert info.to_dict() == raw  # nothing lost, nothing added, same key order
    assert list(info.to_dict()) == list(raw)
    assert (info.steps, info.saved, info.artifact["from"]) == (2807, "checkpoint step-2807", "step-2807")
    cfg = rundir.read_config(G7)
    assert (cfg.model.path, cfg.data.format, cfg.data.argument_order, cfg.method.layers) == \
        ("gemma3-270m", "llama2", "schema", "top:8")


def test_run_info_round_trips_and_leaves_unset_fields_out(tmp_path):
    info = RunInfo(method="lora", steps=3, best_dev_loss=1.5, stopped_for_time={"step": 3, "epoch": 0, "minutes": 1})
    rundir.write_info(tmp_path, info)
    assert json.loads((tmp_path / rundir.INFO).read_text()) == {
        "method": "lora", "stopped_for_time": {"step": 3, "epoch": 0, "minutes": 1}, "steps": 3, "best_dev_loss": 1.5}
    assert rundir.read_info(tmp_path) == info
    assert rundir.read_info(tmp_path / "nothing") is None


def test_an_unknown_key_in_run_json_is_an_error_naming_the_file_and_the_key(tmp_path):
    (tmp_path / rundir.INFO).write_text(json.dumps({"steps": 3, "best_dev_los": 1.0}), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        rundir.read_info(tmp_path)
    assert caught.value.where == str(tmp_path / rundir.INFO) and caught.value.field == "best_dev_los"
    (tmp_path / rundir.MODEL_INFO).write_text("[1]", encoding="utf-8")
    with pytest.raises(InputError, match="must be a JSON object"):
        rundir.read_info(tmp_path, rundir.MODEL_INFO)


def test_config_yaml_is_read_by_the_config_loader(tmp_path):
    with pytest.raises(InputError, match="no config.yaml"):
        rundir.read_config(tmp_path)
    (tmp_path / rundir.CONFIG).write_text("data:\n  format: llama2\n  observations: compact\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        rundir.read_config(tmp_path)
    assert str(tmp_path / rundir.CONFIG) in str(caught.value) and caught.value.field == "data.observations"
    (tmp_path / rundir.CONFIG).write_text("data:\n  format: llama2\n", encoding="utf-8")
    cfg = rundir.read_config(tmp_path)
    assert (cfg.data.format, cfg.data.observation, cfg.data.argument_order) == ("llama2", "full", "as-written")


def test_checkpoint_folders_are_named_by_step(tmp_path):
    assert rundir.checkpoint_dirs(tmp_path) == []
    rundir.checkpoint_dir(tmp_path, 4).mkdir(parents=True)
    assert rundir.checkpoint_dirs(tmp_path) == [tmp_path / rundir.CHECKPOINTS / "step-4"]


def test_no_other_module_spells_the_run_directorys_file_names():
    """The names live in tooltune.rundir; a literal elsewhere is a second definition that can drift. (TENSORBOARD is
    left out: "tensorboard" is also the tracker's name in train.report_to.)"""
    names = [rundir.CONFIG, rundir.INFO, rundir.LOG, rundir.LOSS_PLOT, rundir.CHECKPOINTS, rundir.MODEL_INFO,
             rundir.EXPORT_INFO]
    src = Path(rundir.__file__).parent
    found = [f"{path.relative_to(src)}: {name}" for path in sorted(src.rglob("*.py")) if path.name != "rundir.py"
             for name in names if f'"{name}"' in path.read_text(encoding="utf-8")]
    assert found == []

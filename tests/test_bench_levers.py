"""bench/levers.py: every lever is the demo's LoRA config with exactly its own change, and builds a valid config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import levers

from tooltune.errors import ToolTuneError
from tooltune.train.config import RunConfig, build_dataclass, config_to_dict


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Written here from each lever's description, not read from bench/levers.py: the baseline, and what each lever changes.
EXPECTED_BASELINE = {"method.name": "lora", "method.r": 16, "method.alpha": 32, "train.lr": 3e-4, "train.seed": 0,
                     "train.max_steps": 40, "data.format": "llama2", "data.observation": "compact",
                     "data.argument_order": "as-written", "data.loss_weights": ""}
EXPECTED_CHANGES = {
    "baseline": {},
    "seed": {"train.seed": 1},
    "lr": {"train.lr": 1e-3},
    "lr-seed": {"train.lr": 1e-3, "train.seed": 1},
    "order": {"train.lr": 1e-3, "data.argument_order": "schema"},
    "order-seed": {"train.lr": 1e-3, "data.argument_order": "schema", "train.seed": 1},
    "rank": {"method.r": 64, "method.alpha": 128},
    "observation": {"data.observation": "full"},
    "chatglm3": {"data.format": "chatglm3"},
    "smollm2": {"model.path": None},
    "balance": {"data.train": None},
    "weights": {"data.loss_weights": "slot-keys"},
}


def test_each_lever_changes_only_what_it_names(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache/tooltune/models/smollm2-135m").mkdir(parents=True)
    (tmp_path / "cache/tooltune/models/smollm2-135m/config.json").write_text("{}")
    model = tmp_path / "base"

    def built(name: str) -> dict:
        tree = levers.lever_tree(name, model, tmp_path / "out" / name, data_root, steps=40)
        return _flat(config_to_dict(build_dataclass(RunConfig, tree, "")))

    baseline = built("baseline")
    # The demo's settings, as the levers' descriptions state them.
    assert {k: baseline[k] for k in EXPECTED_BASELINE} == EXPECTED_BASELINE
    assert set(levers.LEVERS) == set(EXPECTED_CHANGES)
    for name, want in EXPECTED_CHANGES.items():
        lever = built(name)
        changed = {key: lever[key] for key in lever if baseline[key] != lever[key] and key != "train.out"}
        if "data.train" in want:  # a path written at run time: checked below
            want = {**want, "data.train": changed.get("data.train")}
        if "model.path" in want:
            want = {**want, "model.path": str(tmp_path / "cache/tooltune/models/smollm2-135m")}
        assert changed == want, name
    # The rebalanced split is written once beside the runs, in the seed format, larger than the course's.
    balanced = Path(built("balance")["data.train"])
    assert balanced.parent == tmp_path / "out"
    assert sum(1 for _ in balanced.open(encoding="utf-8")) > sum(
        1 for _ in (data_root / "hotel/v3_chatglm3_llama2/train.chatglm3.jsonl").open(encoding="utf-8"))


def test_a_missing_prepared_base_names_the_command_that_makes_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ToolTuneError, match="tooltune model prepare smollm2-135m"):
        levers.lever_tree("smollm2", tmp_path / "base", tmp_path / "out/smollm2", tmp_path, steps=40)

"""DeepSpeed through `accelerate launch --config_file configs/accelerate/deepspeed_zero{2,3}.yaml`: the same
`tooltune train` command, and the same training as without it.

DeepSpeed runs on the CPU through its own CPU accelerator, so these run here (one process: under DeepSpeed on a CPU,
accelerate 1.15 reports one process whatever the launcher started) and on a GPU (`bench/gpu.sh`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tooltune.errors import ToolTuneError
from tooltune.train.config import config_from_dict
from tooltune.train.strategy import configure_deepspeed as _configure_deepspeed
from tooltune.train.tiny import save_tiny_model, synthetic_examples

ROOT = Path(__file__).resolve().parents[1]
needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="needs deepspeed (DS_BUILD_OPS=0 pip install --no-build-isolation "
                                            "deepspeed; .ci/run installs it)")


def _train(tmp_path: Path, name: str, run: dict, launch: list[str], *extra: str, **train) -> tuple[Path, str]:
    config = tmp_path / f"{name}.yaml"
    out = tmp_path / name
    config.write_text(yaml.safe_dump({**run, "train": {**run["train"], **train, "out": str(out)}}))
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, *launch, "-m", "tooltune", "train", str(config), *extra], check=False,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@needs_deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_trains_and_resumes_exactly_like_the_plain_loop(tmp_path, stage):
    model_dir = save_tiny_model(tmp_path / "model")
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in synthetic_examples(16, 200, seed=1)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Two micro-batches per step and a clipping norm below every step's gradient norm (~0.15-0.3): a DeepSpeed engine
    # that stepped after each micro-batch, or clipped at its config's 1.0, would end elsewhere. float32 on both sides.
    # The DeepSpeed run is interrupted after 2 steps and resumed from its step-1 checkpoint (accelerate's save_state
    # of the engine): it must still end where the uninterrupted plain run does. The lr rises through a warm-up as long
    # as the run, so the schedule is exercised and the cut run's max_steps does not change it.
    run = {"model": {"path": str(model_dir), "dtype": "float32"}, "method": {"name": "lora"},
           "data": {"train": str(tmp_path / "train.jsonl")},
           "train": {"max_steps": 3, "batch_size": 2, "grad_accum": 2, "lr": 1e-2, "max_grad_norm": 0.05,
                     "warmup_steps": 3, "schedule": "constant", "save_every": 1}}
    accelerate_config = yaml.safe_load((ROOT / f"configs/accelerate/deepspeed_zero{stage}.yaml").read_text())
    accelerate_config.update(num_processes=1, mixed_precision="no")
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(accelerate_config))

    plain, _ = _train(tmp_path, "plain", run, [])
    launch = ["-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "ds.yaml")]
    _train(tmp_path, "deepspeed", run, launch, max_steps=2)
    assert (tmp_path / "deepspeed" / "checkpoints" / "step-1" / "accelerate").is_dir()
    deepspeed, printed = _train(tmp_path, "deepspeed", run, launch, "--resume")
    assert "resuming from" in printed and "(step 1)" in printed

    summary = json.loads((deepspeed / "run.json").read_text())
    assert summary["distributed_type"] == "DEEPSPEED" and summary["steps"] == 3
    logs = [[json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()] for d in (plain, deepspeed)]
    assert [e["lr"] for e in logs[1]] == pytest.approx([1e-2 * 2 / 3, 1e-2, 1e-2])  # after steps 1, 2, 3
    for ours, theirs in zip(*logs, strict=True):
        assert ours["lr"] == theirs["lr"]
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
    want, got = (load_file(d / "adapter_model.safetensors") for d in (plain, deepspeed))
    assert want.keys() == got.keys() and want
    for key in want:
        assert "lora_A" in key or want[key].abs().max() > 0, key  # LoRA's B starts at zero: the steps moved it
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)


def _fake_accelerator(deepspeed_config: dict):
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=deepspeed_config)))


def test_deepspeed_is_handed_the_run_configs_batch_and_clipping_and_refuses_its_own_accumulation():
    cfg = config_from_dict({"model": {"path": "m"}, "method": {"name": "lora"},
                            "train": {"out": "o", "batch_size": 3, "grad_accum": 4, "max_grad_norm": 0.5}})
    ds = {"gradient_accumulation_steps": "auto", "gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": "auto"}
    _configure_deepspeed(_fake_accelerator(ds), cfg)
    assert ds == {"gradient_accumulation_steps": 1, "gradient_clipping": 0.5, "train_micro_batch_size_per_gpu": 3}
    with pytest.raises(ToolTuneError, match="gradient_accumulation_steps: 4.*train.grad_accum=4"):
        _configure_deepspeed(_fake_accelerator({"gradient_accumulation_steps": 4}), cfg)
    adalora = config_from_dict({"model": {"path": "m"}, "method": {"name": "adalora"}, "train": {"out": "o"}})
    with pytest.raises(ToolTuneError, match="adalora.*--multi_gpu"):
        _configure_deepspeed(_fake_accelerator({}), adalora)

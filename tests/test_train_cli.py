"""`tooltune train` end to end: encoded examples from JSONL, the run directory, and a 2-process CPU run through
`accelerate launch` that matches a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from tooltune.cli import main
from tooltune.train.tiny import save_tiny_model, synthetic_examples

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model_dir = save_tiny_model(root / "model")
    for name, seed, n in (("train", 1, 16), ("dev", 2, 4)):
        rows = [asdict(e) for e in synthetic_examples(n, 200, seed=seed)]
        rows[0].pop("position_ids")
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, model_dir


def _config(root, model_dir, out, batch_size):
    tree = {"model": {"path": str(model_dir)},
            "method": {"name": "lora", "dropout": 0.0},
            "data": {"train": str(root / "train.jsonl"), "dev": str(root / "dev.jsonl"), "group_by_length": False},
            "train": {"out": str(out), "max_steps": 3, "batch_size": batch_size, "lr": 1e-2, "eval_every": 3,
                      "log_every": 1}}
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines() if '"loss"' in line]


def test_train_command_writes_the_run_directory(setup):
    root, model_dir = setup
    out = root / "one"
    assert main(["train", str(_config(root, model_dir, out, batch_size=4))]) == 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "config.yaml", "log.jsonl",
                 "loss.png", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == 3 and run["processes"] == 1 and run["best_dev_loss"] > 0
    from peft import PeftModel
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out)


# accelerate 1.15's `--cpu` picks its single-process launcher, which starts several CPU processes only through MPI
# (`--mpirun_hostfile`, Open MPI here); `--multi_gpu` starts them with torch's launcher, and tooltune joins them over
# gloo when there is no CUDA.
@pytest.mark.parametrize("launcher", ["cpu_mpirun", "multi_gpu"])
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(setup, launcher):
    root, model_dir = setup
    if launcher == "cpu_mpirun" and not shutil.which("mpirun"):
        pytest.skip("mpirun not found: `accelerate launch --cpu --num_processes 2` needs MPI (apt install openmpi-bin)")
    single = root / "one"
    if not (single / "run.json").exists():
        assert main(["train", str(_config(root, model_dir, single, batch_size=4))]) == 0
    out = root / f"two-{launcher}"
    flags = ["--multi_gpu"]
    if launcher == "cpu_mpirun":
        hostfile = root / "hostfile"
        hostfile.write_text("localhost slots=2\n")
        flags = ["--cpu", "--mpirun_hostfile", str(hostfile)]
    # Open MPI refuses to start as root unless told it may (CI containers run as root).
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tooltune", "train",
           str(_config(root, model_dir, out, batch_size=2))]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2
    # 2 processes x 2 examples see the same 4 examples per step as 1 process x 4: the same losses.
    assert _losses(out) == pytest.approx(_losses(single), rel=1e-4)
    assert run["best_dev_loss"] == pytest.approx(json.loads((single / "run.json").read_text())["best_dev_loss"],
                                                 rel=1e-4)


def test_untrained_special_token_rows_are_reinitialised_and_trained(tmp_path):
    """The Gemma-3 trap in miniature: `</s>` (a special token the data trains the model to emit) has an untrained,
    near-zero row in the base; LoRA on linear layers alone could never make it likely. The recipe re-initialises
    the row and trains it with the adapter, and the saved adapter carries it."""
    import torch
    from peft import PeftModel

    model_dir = save_tiny_model(tmp_path / "model")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    eos = 2
    with torch.no_grad():
        base.get_input_embeddings().weight[eos] = 1e-4
    base.save_pretrained(model_dir)
    rows = []
    for e in synthetic_examples(16, 200, seed=4):
        ids, labels = e.input_ids + [eos], e.labels + [eos]
        rows.append({"input_ids": ids, "labels": labels})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = {"model": {"path": str(model_dir)}, "method": {"name": "lora"}, "data": {"train": str(tmp_path / "train.jsonl")},
            "train": {"out": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 1e-2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["prepared_special_rows"] == ["</s>"]
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "run")
    merged = loaded.merge_and_unload().get_input_embeddings().weight
    median = merged.norm(dim=-1).median()
    assert merged[eos].norm() > 0.5 * median  # re-initialised to a typical norm, then trained
    original = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight
    others = torch.arange(len(original)) != eos
    assert torch.equal(merged[others], original[others])  # no other row moved

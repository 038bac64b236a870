"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG states (one file per process), data position.

Only the trainable parameters are written (an adapter is a few MB; the frozen base is reloaded from its path), so a
checkpoint of a 7B LoRA run is small. FSDP and DeepSpeed shard the optimizer; there `accelerator.save_state` writes it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from tooltune import rundir
from tooltune.errors import InputError, ToolTuneError
from tooltune.jsonio import atomic_write_text, read_json

SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)
PROGRESS = "progress.json"
"""Written last: a checkpoint without a readable one is not complete."""
TRAINABLE = "trainable.pt"
"""The trainable parameters by name (unsharded runs; `tooltune export --checkpoint` reads it too)."""


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        np.random.set_state(state["numpy"])


def _adalora_state(model) -> dict:
    """AdaLoRA's importance scores live outside parameters and optimizer; exact resume needs them too."""
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is None:
        return {}
    return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
            "rank_pattern": model.peft_config[allocator.adapter_name].rank_pattern}


def save(directory: Path, accelerator, model, optimizer, scheduler, progress: dict) -> None:
    """Write checkpoint `directory` (every process writes its RNG state; the main process the rest), atomically:
    everything goes to a temporary directory beside it, `progress.json` last, renamed to `directory` once every
    process has written. A kill midway leaves the temporary directory, which `latest` never picks."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if accelerator.distributed_type in SHARDED:
        accelerator.save_state(str(tmp / "accelerate"))
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        if accelerator.distributed_type not in SHARDED:
            trainable = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            torch.save(trainable, tmp / TRAINABLE)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"scheduler": scheduler.state_dict(), "adalora": _adalora_state(model)}, tmp / "state.pt")
        atomic_write_text(tmp / PROGRESS, json.dumps(progress, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if directory.exists():  # the same step saved again (a resumed run): the new one replaces it whole
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    accelerator.wait_for_everyone()


def incomplete(directory: Path) -> str | None:
    """Why checkpoint `directory` cannot be resumed from (a file missing, `progress.json` unreadable); None when
    it is complete."""
    if not (directory / PROGRESS).is_file():
        return f"no {PROGRESS}"
    try:
        progress = read_json(directory / PROGRESS)
    except InputError as e:
        return f"{PROGRESS} is unreadable ({e.message})"
    if not isinstance(progress, dict) or not isinstance(progress.get("step"), int):
        return f"{PROGRESS} holds no step"
    sharded = (directory / "accelerate").is_dir()
    needed = ["state.pt"] + (["accelerate"] if sharded else [TRAINABLE, "optimizer.pt"])
    missing = [name for name in needed if not (directory / name).exists()]
    return f"missing {', '.join(missing)}" if missing else None


def latest(run_dir: Path, say: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint of `run_dir`, or None. A newer one that is not complete (written by a version
    that did not write atomically, or damaged since) is skipped, and `say` (default: print to stderr) says so."""
    say = say or (lambda message: print(message, file=sys.stderr))
    steps = sorted(((int(m.group(1)), p) for p in rundir.checkpoint_dirs(run_dir)
                    if (m := re.fullmatch(r"step-(\d+)", p.name)) and p.is_dir()), reverse=True)
    for _, path in steps:
        why = incomplete(path)
        if why is None:
            return path
        say(f"tooltune train: skipping checkpoint {path}: not complete ({why}); using an earlier one")
    return None


def load(directory: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Restore everything `save` wrote; returns the progress dict (step, epoch, window, early-stopping state)."""
    if accelerator.distributed_type in SHARDED:
        accelerator.load_state(str(directory / "accelerate"))
    else:
        trainable = torch.load(directory / TRAINABLE, map_location="cpu")
        params = dict(model.named_parameters())
        missing = sorted(set(trainable) - set(params))
        if missing:
            raise ToolTuneError(f"checkpoint {directory} does not fit this model: no parameter {missing[0]}")
        with torch.no_grad():
            for name, value in trainable.items():
                params[name].copy_(value)
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False))
    state = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
    scheduler.load_state_dict(state["scheduler"])
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None and state["adalora"]:
        model.peft_config[allocator.adapter_name].rank_pattern = state["adalora"].pop("rank_pattern")
        for key, value in state["adalora"].items():
            setattr(allocator, key, value)
    rng = directory / f"rng-{accelerator.process_index}.pt"
    if not rng.is_file():
        raise ToolTuneError(f"checkpoint {directory} has no RNG state for process {accelerator.process_index}: "
                            f"resume with the same number of processes")
    _set_rng_state(torch.load(rng, weights_only=False))
    return read_json(directory / PROGRESS)

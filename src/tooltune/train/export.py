"""Merge a run's adapter into its base model and write a plain Hugging Face model directory."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from tooltune import rundir
from tooltune.errors import ToolTuneError
from tooltune.jsonio import read_json, staged_directory
from tooltune.rundir import RunInfo
from tooltune.runs import base_dir, tokenizer_dir
from tooltune.train import checkpoint
from tooltune.train.config import RunConfig
from tooltune.train.methods import METHODS


def run_info(run_dir: Path) -> tuple[str, str]:
    """(method name, base model path) of a finished run directory."""
    cfg = rundir.read_config(run_dir)
    return cfg.method.name, cfg.model.path


def merged_model(run_dir: str | Path, base_path: str | None = None, dtype: Any = None) -> tuple[Any, Any, RunConfig]:
    """(model, tokenizer, config) of a run: its base with the adapter merged in (a full fine-tuning run's own weights),
    in `dtype` (None: as the checkpoint is stored), and the tokenizer the run trained with.

    Refused where merging is not defined or would change the model: methods with virtual tokens (nothing to fold into
    the weights) and QLoRA (the base is 4-bit; folding the update into NF4 weights rounds it away or needs a
    de-quantised base that is not the model that was trained); and a run without its weights (training that did not
    finish, or a folder copied without them).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    cfg = rundir.read_config(run_dir)
    method, base = cfg.method.name, cfg.model.path
    entry = METHODS[method]
    if entry.quantized:
        raise ToolTuneError(f"{run_dir}: method {method} trained on a 4-bit base; merging into 4-bit weights would "
                            f"round the update away, so it is refused. Load the adapter on the base instead "
                            f"(PeftModel.from_pretrained), or retrain with method.name=lora to merge")
    if entry.virtual_tokens:
        raise ToolTuneError(f"{run_dir}: method {method} adds virtual tokens, not weight updates, so there is nothing "
                            f"to merge; load the adapter with PeftModel.from_pretrained")
    weights = rundir.MODEL_CONFIG if entry.peft_config is None else rundir.ADAPTER_WEIGHTS
    if not (run_dir / weights).is_file():
        steps = ", ".join(p.name for p in rundir.checkpoint_dirs(run_dir))
        hint = (f"; its checkpoints ({steps}) become a run with `tooltune export RUN --checkpoint STEP --out DIR`"
                if steps else "")
        raise ToolTuneError(f"{run_dir}: no {weights} (the run did not finish, or was copied without its "
                            f"weights){hint}")
    base = base_path or base
    kwargs = {} if dtype is None else {"dtype": dtype}
    if entry.peft_config is None:
        model = AutoModelForCausalLM.from_pretrained(run_dir, **kwargs)
    else:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir(base, run_dir), **kwargs),
                                          run_dir).merge_and_unload()
    return model, AutoTokenizer.from_pretrained(tokenizer_dir(run_dir, base)), cfg


def merge(run_dir: str | Path, out: str | Path, base_path: str | None = None) -> Path:
    """Write `out`: the base model with the run's adapter merged in (`merged_model`), plus the tokenizer and the
    format name."""
    run_dir, out = Path(run_dir), Path(out)
    model, tokenizer, cfg = merged_model(run_dir, base_path)
    method = cfg.method.name
    with staged_directory(out) as staging:  # each file renamed into `out` once all are written
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # A model folder has no config.yaml: what inference needs from it travels in the folder's RunInfo.
        info = dataclasses.replace(rundir.read_info(run_dir) or RunInfo(), method=method,
                                   format=cfg.data.format or None, observation=cfg.data.observation,
                                   argument_order=cfg.data.argument_order)
        rundir.write_info(staging, info, rundir.MODEL_INFO)
        (staging / rundir.EXPORT_INFO).write_text(json.dumps({"merged_from": str(run_dir),
                                                               "base": base_path or cfg.model.path,
                                                               "method": method}, indent=1), encoding="utf-8")
    return out


def checkpoint_run(run_dir: str | Path, step: int, out: str | Path) -> Path:
    """Write `out`: a run directory like `run_dir` whose adapter is the one of its checkpoint at optimizer step `step`
    (`checkpoints/step-STEP`), so that `tooltune eval`, `chat` and `serve` load the model of that moment (a learning
    curve, or a step chosen on dev). Only adapter methods (the checkpoint holds the trainable weights; a full run's
    is the whole model) and unsharded checkpoints (FSDP/DeepSpeed ones are in accelerate's own layout)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out = Path(run_dir), Path(out)
    method, base = run_info(run_dir)
    if METHODS[method].peft_config is None:
        raise ToolTuneError(f"{run_dir}: method {method} trains the whole model; its checkpoints are not adapters")
    source = rundir.checkpoint_dir(run_dir, step)
    if not source.is_dir():
        have = sorted(p.name for p in rundir.checkpoint_dirs(run_dir))
        raise ToolTuneError(f"{run_dir} has no checkpoint at step {step} (it has: {', '.join(have) or 'none'})")
    why = checkpoint.incomplete(source)
    if why is not None:
        raise ToolTuneError(f"checkpoint {source} is not complete ({why})")
    if not (source / checkpoint.TRAINABLE).is_file():
        raise ToolTuneError(f"checkpoint {source} was written by FSDP/DeepSpeed (accelerate's sharded layout); "
                            f"resume it with --resume instead")
    trainable = torch.load(source / checkpoint.TRAINABLE, map_location="cpu", weights_only=True)
    # The run's model as inference loads it (base, rows for the run's added tokens, its adapter), in float32: the
    # checkpoint's weights are then copied in exactly whatever dtype they were trained in.
    model = AutoModelForCausalLM.from_pretrained(base_dir(base, run_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(run_dir, base))
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows come from the adapter
    model = PeftModel.from_pretrained(model, run_dir)
    params = dict(model.named_parameters())
    unknown = sorted(set(trainable) - set(params))
    if unknown:
        raise ToolTuneError(f"checkpoint {source} holds weights the run's model has not ({unknown[0]}, ...): it "
                            f"belongs to another configuration")
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value.to(params[name].dtype))
    with staged_directory(out) as staging:
        for path in run_dir.iterdir():  # config, tokenizer, adapter config: as the run has them
            if path.is_file() and path.name not in (rundir.ADAPTER_WEIGHTS, rundir.INFO, rundir.LOG, rundir.LOSS_PLOT):
                shutil.copy(path, staging / path.name)
        model.save_pretrained(staging)
        progress = read_json(source / checkpoint.PROGRESS)
        info = dataclasses.replace(rundir.read_info(run_dir) or RunInfo(), checkpoint_of=str(run_dir), steps=step,
                                   epoch=progress.get("epoch"), saved=f"checkpoint step-{step}")
        rundir.write_info(staging, info)
    return out

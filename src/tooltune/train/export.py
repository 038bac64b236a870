"""Merge a run's adapter into its base model and write a plain Hugging Face model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tooltune.errors import ToolTuneError
from tooltune.jsonio import staged_directory
from tooltune.train.methods import METHODS


def run_info(run_dir: Path) -> tuple[str, str]:
    """(method name, base model path) of a finished run directory."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ToolTuneError(f"{run_dir} is not a tooltune run directory (no config.yaml)")
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    return cfg["method"]["name"], cfg["model"]["path"]


def merge(run_dir: str | Path, out: str | Path, base_path: str | None = None) -> Path:
    """Write `out`: the base model with the run's adapter merged in, plus the tokenizer and the format name.

    Refused where merging is not defined or would change the model: methods with virtual tokens (nothing to fold into
    the weights) and QLoRA (the base is 4-bit; folding the update into NF4 weights rounds it away or needs a
    de-quantised base that is not the model that was trained).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out = Path(run_dir), Path(out)
    method, base = run_info(run_dir)
    entry = METHODS[method]
    if entry.quantized:
        raise ToolTuneError(f"{run_dir}: method {method} trained on a 4-bit base; merging into 4-bit weights would "
                            f"round the update away, so it is refused. Load the adapter on the base instead "
                            f"(PeftModel.from_pretrained), or retrain with method.name=lora to merge")
    if entry.virtual_tokens:
        raise ToolTuneError(f"{run_dir}: method {method} adds virtual tokens, not weight updates, so there is nothing to "
                            f"merge; load the adapter with PeftModel.from_pretrained")
    base = base_path or base
    if entry.peft_config is None:
        model = AutoModelForCausalLM.from_pretrained(run_dir)
    else:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir).merge_and_unload()
    with staged_directory(out) as staging:  # each file renamed into `out` once all are written
        model.save_pretrained(staging)
        AutoTokenizer.from_pretrained(run_dir).save_pretrained(staging)
        info = run_dir / "run.json"
        if info.is_file():
            shutil.copy(info, staging / "tooltune_run.json")
        (staging / "tooltune_export.json").write_text(json.dumps({"merged_from": str(run_dir), "base": base,
                                                                  "method": method}, indent=1), encoding="utf-8")
    return out

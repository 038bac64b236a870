"""Loading something to generate with: a training run directory, or a plain Hugging Face model directory.

A run directory (what `tooltune train` writes) holds `config.yaml` (the config as run: base model path, method, chat
format, observation rendering), the tokenizer, and either a PEFT adapter (`adapter_config.json`) or, for full
fine-tuning, the whole model. A plain model directory is a base model evaluated as it is (the lecture's "native" row):
the chat format must then be named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tooltune.errors import ToolTuneError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    format: str
    observation: str
    model_name: str
    """What the report's Model column shows (the base model's folder name)."""
    method: str
    """What the report's Method column shows (`native` for an untrained base)."""


def _dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    if not hasattr(torch, name):
        raise ToolTuneError(f"unknown dtype {name!r} (e.g. float32, bfloat16)")
    return getattr(torch, name)


def load_for_inference(path: str | Path, *, format: str | None = None, observation: str | None = None,
                       dtype: str = "float32") -> Loaded:
    """The model, tokenizer and chat format behind `path` (a run directory or a model directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tooltune.formats import FORMATS, ensure_special_tokens, get_format

    path = Path(path)
    if not path.is_dir():
        raise ToolTuneError(f"{path} is not a directory (expected a tooltune run or a Hugging Face model folder)")
    config_file = path / "config.yaml"
    if config_file.is_file():
        cfg = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        method = cfg.get("method", {}).get("name", "full")
        base = cfg.get("model", {}).get("path", "")
        data = cfg.get("data", {})
        fmt = format or data.get("format") or "chatglm3"
        obs = observation or data.get("observation") or "full"
        tokenizer = AutoTokenizer.from_pretrained(path)
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            if not Path(base).is_dir():
                raise ToolTuneError(f"{path}: its base model {base!r} is not a directory here; the adapter needs it")
            model = AutoModelForCausalLM.from_pretrained(base, dtype=_dtype(dtype))
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            model = PeftModel.from_pretrained(model, path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
        name = Path(base).name if base else path.name
    elif (path / "config.json").is_file():
        if not format:
            raise ToolTuneError(f"{path} is a plain model folder: name its chat format with --format "
                                f"({', '.join(FORMATS)})")
        fmt, obs, method, name = format, observation or "full", "native", path.name
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
        if ensure_special_tokens(tokenizer, get_format(fmt).for_tokenizer(tokenizer).special_tokens):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    else:
        raise ToolTuneError(f"{path} holds neither config.yaml (a tooltune run) nor config.json (a model)")
    get_format(fmt)
    model.eval()
    return Loaded(model, tokenizer, fmt, obs, name, method)

"""Load a base causal LM (local folder, GGUF file, or alias) and convert GGUF checkpoints once to a plain folder.

transformers loads a GGUF file by dequantising it, but leaves a GGUF quantizer on the model (`hf_quantizer`,
`config.quantization_config`) which makes `save_pretrained` and `Trainer` refuse it. `prepare_base` therefore
converts once into `cache_dir()/models/<alias>` (weights + tokenizer + a `tooltune-prepared.json` note), and
`load_base(alias)` loads that folder afterwards: seconds instead of minutes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tooltune import paths
from tooltune.errors import ToolTuneError
from tooltune.hardware import DTYPES, torch_dtype
from tooltune.models.registry import ALIASES, resolve_alias

PREPARED_NOTE = "tooltune-prepared.json"


def prepared_dir(alias: str) -> Path:
    """Where `prepare_base(alias)` puts the plain Hugging Face folder."""
    return paths.cache_dir() / "models" / alias


def load_model(folder: str | Path, dtype: Any = "float32", **kwargs: Any):
    """The causal LM of a Hugging Face folder in `dtype` (a torch dtype, its name, or `auto`: see
    `tooltune.hardware.torch_dtype`); `kwargs` go to `from_pretrained` (a PEFT method's quantisation). The one place
    tooltune loads a model's weights from a folder."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype), **kwargs)


def max_positions(config: Any) -> int | None:
    """How many positions a model's config allows (`max_position_embeddings`, GPT-2's `n_positions`); None when
    it says nothing."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _drop_gguf_marker(model) -> None:
    """Make a dequantised GGUF model an ordinary one: savable and trainable.

    The weights are already dense tensors (no GGUF kernels are installed, so transformers dequantised them);
    only the quantizer bookkeeping is left, and it is what blocks saving and training.
    """
    model.hf_quantizer = None
    for holder in (model, model.config):
        if getattr(holder, "quantization_config", None) is not None:
            delattr(holder, "quantization_config")


def _load_gguf(gguf_path: Path, dtype):
    from transformers import AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = load_model(folder, dtype, gguf_file=name)
    _drop_gguf_marker(model)
    return model, tokenizer


def _is_prepared(folder: Path) -> bool:
    return (folder / PREPARED_NOTE).is_file()


def prepare_base(name: str, out: str | Path | None = None, dtype: str = "bfloat16", force: bool = False) -> Path:
    """Convert a GGUF checkpoint (an alias or a .gguf path) into a plain Hugging Face folder; return the folder.

    Writes into a temporary sibling folder and renames it at the end, so an interrupted conversion never leaves a
    folder that looks prepared. An already prepared folder is kept unless `force`.
    """
    if dtype not in DTYPES:
        raise ToolTuneError(f"cannot save weights as {dtype!r}: use one of {', '.join(DTYPES)}")
    if name in ALIASES:
        default_out = prepared_dir(name)
    elif Path(name).suffix == ".gguf" and Path(name).is_file():
        default_out = paths.cache_dir() / "models" / Path(name).stem
    else:
        raise ToolTuneError(f"cannot prepare {name!r}: give a known alias ({', '.join(sorted(ALIASES))}) "
                            f"or an existing .gguf file")
    folder = Path(out) if out else default_out
    if _is_prepared(folder) and not force:
        return folder      # without looking for the GGUF: its package may be gone, the folder is enough
    if folder.exists() and any(folder.iterdir()) and not _is_prepared(folder):
        raise ToolTuneError(f"{folder} exists and is not a tooltune-prepared model folder; choose another --out")
    gguf_path = resolve_alias(name) if name in ALIASES else Path(name)
    started = time.perf_counter()
    # Dequantise in float32 (transformers warns that GGUF loading in another dtype casts every matmul), then cast.
    model, tokenizer = _load_gguf(gguf_path, "float32")
    model.to(torch_dtype(dtype))
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    note = {"source": str(gguf_path), "dtype": dtype, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "convert_seconds": round(time.perf_counter() - started, 1)}
    (staging / PREPARED_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def load_base(name_or_path: str | Path, dtype="float32", gguf_file: str | None = None):
    """(model, tokenizer) for a Hugging Face causal LM.

    `name_or_path`: a local model folder; a .gguf file (or a folder plus `gguf_file=`), dequantised in memory and
    freed of its quantizer marker; or an alias (`gemma3-270m`, `smollm2-135m`), converted once by `prepare_base`
    and loaded from the prepared folder afterwards. `dtype`: a torch dtype, its name, or "auto" (`load_model`).
    """
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if name in ALIASES and not Path(name).exists():
        folder = prepare_base(name)
    else:
        path = Path(name).expanduser()
        if gguf_file is None and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise ToolTuneError(f"GGUF file {path / gguf_file} does not exist")
            return _load_gguf(path / gguf_file, dtype)
        if not path.is_dir():
            raise ToolTuneError(f"base model {name!r} is neither a local model folder nor a known alias "
                                f"({', '.join(sorted(ALIASES))})")
        if not (path / "config.json").is_file():
            raise ToolTuneError(f"{path} has no config.json: not a Hugging Face model folder")
        folder = path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return load_model(folder, dtype), tokenizer

"""Loading something to generate with: a training run directory, or a plain Hugging Face model directory.

A run directory (what `tooltune train` writes, `tooltune.rundir`) holds `config.yaml` (the config as run: base model
path, method, chat format, observation rendering, argument order), the tokenizer, and either a PEFT adapter or, for
full fine-tuning, the whole model. A plain model directory is a base model evaluated as it is (the lecture's "native"
row): the chat format must then be named, by the caller or by the folder's `tooltune_run.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tooltune import paths, rundir
from tooltune.dialogue import AS_WRITTEN
from tooltune.errors import InputError, ToolTuneError
from tooltune.formats import FORMATS, ensure_special_tokens, get_format
from tooltune.formats.base import single_id
from tooltune.hardware import torch_dtype
from tooltune.inference import GenerationConfig
from tooltune.models import load as model_load
from tooltune.models.registry import ALIASES
from tooltune.train import methods as train_methods
from tooltune.train.config import DataConfig

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
    argument_order: str = AS_WRITTEN
    """How the run laid out calls' arguments in training (`data.argument_order`); prompts must do the same."""

    def generation(self, **options: Any) -> GenerationConfig:
        """Generation settings that render prompts the way this run was trained (observation, argument order)."""
        return GenerationConfig(observation=self.observation, argument_order=self.argument_order, **options)


def default_device() -> str:
    """Where inference runs unless told: a CUDA GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def base_dir(base: str, run: Path) -> Path:
    """A run's base model folder: as written (absolute, or relative to where training ran), else beside the run, else
    a base-model alias (`gemma3-270m`: the folder `tooltune model prepare` writes, prepared now if it is not yet)."""
    for candidate in (Path(base), run.parent / base, run / base):
        if (candidate / rundir.MODEL_CONFIG).is_file():
            return candidate
    if base in ALIASES:
        return model_load.prepare_base(base)  # looked up at the call: tests stand in for it
    raise ToolTuneError(f"{run}: its base model {base!r} is not a model folder here; the adapter needs it")


def tokenizer_dir(run: Path, base: str) -> Path:
    """Where a run's tokenizer is: the run itself, or (a run that added no token and ships without one, like those
    under bench/artifacts/) its base model's folder."""
    if (run / rundir.TOKENIZER_CONFIG).is_file():
        return run
    return base_dir(base, run)


def training_data(run: str | Path) -> Path:
    """The dialogue file a fine-tuning run was trained on (its config.yaml's `data.train`): as written (absolute, or
    relative to where training ran), else beside the run, else relative to the data dir (`tooltune.paths.data_dir`:
    a run shipped with the repository names `hotel/v3_chatglm3_llama2/train.chatglm3.jsonl`)."""
    run = Path(run)
    train = rundir.read_config(run).data.train if rundir.has_config(run) else ""
    if not train:
        raise InputError(f"not a fine-tuning run with training data (no {rundir.CONFIG} with data.train)",
                         where=str(run))
    for candidate in (Path(train), run.parent / train, run / train, paths.data_dir() / train):
        if candidate.is_file():
            return candidate
    raise InputError(f"the training data {train!r} is not a file here", where=str(run / rundir.CONFIG),
                     field="data.train")


def _check_format(name: str | None, path: Path):
    if not name:
        raise InputError(f"no chat format: give --format ({', '.join(FORMATS)}) or write {rundir.MODEL_INFO} with a "
                         f"'format'", where=str(path))
    return get_format(name)


def cpu_4bit_kernel(model: Any) -> bool:
    """Whether `model`'s 4-bit layers run on bitsandbytes' fused kernel: on a GPU, or on a CPU with AVX512-BF16,
    where a decoding step of Gemma-3-270M + LoRA at batch 16 took 0.66 s against 1.42 s with the NF4 weights
    decoded to float32 (measured here, bench/results/quality.md)."""
    if model.device.type != "cpu":
        return True
    return all(getattr(m, "support_avx512bf16_for_cpu", False) for m in model.modules()
               if type(m).__name__ == "Linear4bit")


def load_for_inference(path: str | Path, *, format: str | None = None, observation: str | None = None,
                       dtype: str = "auto", add_missing_tokens: bool = True, device: str | None = None) -> Loaded:
    """The model, tokenizer and chat format behind `path` (a run directory or a model directory).

    `device`: where the model is put; default a CUDA GPU when there is one, else the CPU.
    `dtype`: a torch dtype name, or auto: a run's own `model.dtype`, else bfloat16 where bf16 is native (a GPU, a
    CPU with AVX512-BF16 or AMX) and float32 elsewhere.

    `add_missing_tokens`: a plain model that lacks the format's special tokens gets them (new embedding rows, the
    lecture's "native" row evaluates a base model so); False refuses instead (a chat with untrained role tokens
    would only produce noise).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("not a directory (expected a training run or a saved model)", where=str(path))
    info = rundir.read_info(path)
    if rundir.has_config(path) and not (info and info.pretrained):  # a fine-tuning run
        loaded, placed = _load_run(path, info, format, observation, dtype, device)
    elif (path / rundir.MODEL_CONFIG).is_file() or (path / rundir.ADAPTER_CONFIG).is_file():
        loaded, placed = _load_model_folder(path, format, observation, dtype), False
    else:
        raise InputError(f"no {rundir.CONFIG}, {rundir.MODEL_CONFIG} or {rundir.ADAPTER_CONFIG}: not a run or a "
                         f"saved model", where=str(path))
    model, tokenizer, fmt_name = loaded.model, loaded.tokenizer, loaded.format
    chat_format = _check_format(fmt_name, path).for_tokenizer(tokenizer)
    missing = [t for t in chat_format.special_tokens if single_id(tokenizer, t) is None]
    if missing and not add_missing_tokens:
        raise InputError(f"the tokenizer lacks the {fmt_name} format's special tokens {', '.join(missing)}: was the "
                         f"model trained with this format?", where=str(path))
    if missing and ensure_special_tokens(tokenizer, chat_format.special_tokens):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if not placed:  # a 4-bit base was loaded onto its device and cannot be moved
        model.to(device or default_device())
    model.eval()
    return loaded


def _load_run(path: Path, info: rundir.RunInfo | None, format: str | None, observation: str | None, dtype: str,
              device: str | None) -> tuple[Loaded, bool]:
    """A fine-tuning run: its base with the adapter (or its whole model), rendered as its config.yaml says; and
    whether the model is already on its device (a 4-bit base)."""
    from transformers import AutoTokenizer

    cfg = rundir.read_config(path)
    if dtype == "auto":
        dtype = cfg.model.dtype  # auto: as the run was trained (itself auto: what is native here)
    method, base = cfg.method.name, cfg.model.path
    # A run written before config.yaml was the format's one home may name it only in run.json.
    fmt_name = format or cfg.data.format or (info.format if info else None)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(path, base))
    placed = False
    if (path / rundir.ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        quantized = train_methods.METHODS[method].quantized
        kwargs: dict = {}
        if quantized:
            # The adapter was trained on the 4-bit base: it is applied to the base quantised the same way.
            train_methods.check_supported(method, gradient_checkpointing=False)
            kwargs = {**train_methods.load_kwargs(method, torch_dtype(cfg.model.dtype)),
                      "device_map": {"": device or default_device()}}
        model = model_load.load_model(base_dir(base, path), dtype, **kwargs)
        if quantized and not cpu_4bit_kernel(model):
            # Without bitsandbytes' fused CPU kernel, every 4-bit matmul would dequantise its weight again at each
            # decoding step: the same NF4 values are decoded once into plain weights instead.
            model = model.dequantize(dtype=torch_dtype(dtype))
        placed = quantized and model.device.type != "cpu"
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows come from the adapter
        model = PeftModel.from_pretrained(model, path)
    else:
        model = model_load.load_model(path, dtype)
    name = Path(base).name if base else path.name
    return Loaded(model, tokenizer, fmt_name, observation or cfg.data.observation, name, method,
                  cfg.data.argument_order), placed


def _load_model_folder(path: Path, format: str | None, observation: str | None, dtype: str) -> Loaded:
    """A plain model folder (a base, a merged export, a pre-trained GPT-2), rendered as its tooltune_run.json says,
    else as the caller says."""
    from transformers import AutoTokenizer

    info = rundir.read_info(path, rundir.MODEL_INFO) or rundir.RunInfo()
    fmt_name = format or info.format
    _check_format(fmt_name, path)  # before the (slow) loading
    tokenizer = AutoTokenizer.from_pretrained(path)
    if (path / rundir.ADAPTER_CONFIG).is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    else:
        model = model_load.load_model(path, dtype)
    return Loaded(model, tokenizer, fmt_name, observation or info.observation or DataConfig.observation, path.name,
                  info.method or "native", info.argument_order or AS_WRITTEN)

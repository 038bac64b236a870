"""The fine-tuning recipe, top to bottom: config -> tokenizer, base model, data -> the loop -> run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tooltune.errors import ToolTuneError
from tooltune.hardware import describe, native_bf16, resolve_dtype, torch_dtype
from tooltune.models import prepare_embeddings
from tooltune.models.load import load_model, max_positions
from tooltune.rundir import RunInfo
from tooltune.train import methods
from tooltune.train.config import RunConfig, replace
from tooltune.train.data import load_split
from tooltune.train.loop import run_training


def load_base_model(cfg: RunConfig):
    """The base causal LM of `model.path` (a local Hugging Face directory), loaded as the method needs it."""
    path = Path(cfg.model.path)
    if not (path / "config.json").is_file():
        raise ToolTuneError(f"model.path={cfg.model.path!r} is not a Hugging Face model directory (no config.json)")
    methods.check_supported(cfg.method.name, cfg.model.gradient_checkpointing)
    dtype = torch_dtype(cfg.model.dtype)
    return load_model(path, dtype, **methods.load_kwargs(cfg.method.name, dtype))


def load_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(cfg.model.tokenizer or cfg.model.path)


def _fit_positions(cfg: RunConfig) -> RunConfig:
    """data.max_length capped at the model's positions (a small pre-trained GPT-2 may have only a few hundred);
    the cap is printed, and the samples it shortens are counted like any other truncation."""
    from transformers import AutoConfig

    model_cfg = AutoConfig.from_pretrained(cfg.model.path)
    positions = max_positions(model_cfg)
    if positions and cfg.data.max_length > positions:
        print(f"tooltune train: data.max_length={cfg.data.max_length} capped at the {positions} positions of "
              f"model.path={cfg.model.path}")
        return replace(cfg, data={"max_length": positions})
    return cfg


def _prepare_special_rows(model, tokenizer, examples, new_ids: list[int]) -> list[int]:
    """The special-token rows the fine-tune must train: those the format added (`new_ids`) and those the data uses
    that the base checkpoint never trained (Gemma-3's `<start_of_turn>`/`<end_of_turn>`: an adapter on linear
    layers alone cannot learn to emit them, and generation runs on to the length limit). Those rows are
    re-initialised by `prepare_embeddings`; the caller trains them (peft's trainable_token_indices)."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    used = set()
    for example in examples:  # encoded JSONL examples may hold labels that are not their input ids
        used.update(i for i in example.input_ids if i in special)
        used.update(i for i in example.labels if i in special)
    candidates = sorted(used | set(new_ids))
    return sorted(set(prepare_embeddings(model, tokenizer, candidates)) | set(new_ids)) if candidates else []


def cpu_bf16_warning(cfg: RunConfig) -> str | None:
    """A warning when bf16 would run on a CPU without native bf16 (no AVX512-BF16/AMX): there PyTorch emulates it,
    and a Gemma-3-270M LoRA step was measured ~100x slower in backward than in float32 (bench/results/quality.md)."""
    import torch

    if native_bf16() or (resolve_dtype(cfg.model.dtype) != "bfloat16" and cfg.train.mixed_precision != "bf16"):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return (f"tooltune train: this CPU ({capability}) has no native bf16, where bf16 training is many times slower "
            f"than float32; set model.dtype=float32 train.mixed_precision=no")


@dataclass
class Prepared:
    """Everything `run_training` needs, as `fine_tune` builds it (bench/train_profile.py reuses it)."""
    cfg: RunConfig
    model: object
    tokenizer: object
    train: list
    dev: list
    meta: RunInfo
    new_token_ids: list[int]


def fine_tune(cfg: RunConfig, *, resume: bool = False) -> RunInfo:
    """Run the recipe; returns what it wrote to run.json."""
    p = prepare(cfg)
    return run_training(p.cfg, p.model, p.tokenizer, p.train, p.dev, resume=resume, meta=p.meta,
                        new_token_ids=p.new_token_ids).info


def prepare(cfg: RunConfig) -> Prepared:
    """Check the config, load tokenizer, data and base model, prepare the special-token rows."""
    if not cfg.model.path:
        raise ToolTuneError("model.path is empty: name a local Hugging Face model directory")
    if not cfg.data.train:
        raise ToolTuneError("data.train is empty: name a training file")
    for key, value in (("model.path", cfg.model.path), ("model.tokenizer", cfg.model.tokenizer)):
        if value and not Path(value).is_dir():
            raise ToolTuneError(f"{key}={value!r} is not a directory (models are loaded from local paths only)")
    methods.check_supported(cfg.method.name, cfg.model.gradient_checkpointing)
    if cfg.data.packing and methods.METHODS[cfg.method.name].virtual_tokens:
        raise ToolTuneError(f"data.packing cannot be used with method {cfg.method.name}: its virtual tokens would be "
                            f"shared by every example packed in a row; set data.packing=false")
    cfg = _fit_positions(cfg)
    if warning := cpu_bf16_warning(cfg):
        print(warning)
    if cfg.data.loss_weights and (cfg.data.packing or not cfg.data.format):
        raise ToolTuneError("data.loss_weights needs dialogues (data.format set) and no data.packing: a weight "
                            "belongs to one dialogue's examples")
    if cfg.data.call_weight != 1 and (cfg.data.packing or not cfg.data.format):
        raise ToolTuneError("data.call_weight needs dialogues (data.format set) and no data.packing: the format "
                            "says which tokens belong to a call")
    tokenizer = load_tokenizer(cfg)
    vocab_before = len(tokenizer)
    train, dropped_train = load_split(cfg.data.train, cfg.data, tokenizer, pack=cfg.data.packing, weighted=True)
    dev, dropped_dev = load_split(cfg.data.dev, cfg.data, tokenizer) if cfg.data.dev else ([], None)
    for name, dropped in (("train", dropped_train), ("dev", dropped_dev)):
        if dropped and (dropped.too_long or dropped.no_target):
            print(f"tooltune train: {name}: left out {dropped} (first: {dropped.where[0]})")
    if not train:
        raise ToolTuneError(f"{cfg.data.train}: no usable training example ({dropped_train})")
    new_ids = list(range(vocab_before, len(tokenizer)))  # special tokens the chat format added
    model = load_base_model(cfg)
    # Resizes the embeddings to the tokenizer; new rows start at the trained rows' mean direction, not at random.
    fixed_ids = _prepare_special_rows(model, tokenizer, train, new_ids)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if fixed_ids:
        names = ", ".join(tokenizer.convert_ids_to_tokens(fixed_ids)[:8])
        method = methods.METHODS[cfg.method.name]
        how = ("trained" if method.peft_config is None  # full fine-tuning
               else "not trainable by this method" if method.virtual_tokens else "trained with the adapter")
        print(f"tooltune train: {len(fixed_ids)} special-token rows were new or never trained by the base checkpoint "
              f"({names}); re-initialised and {how}")
    print(f"tooltune train: model.dtype={cfg.model.dtype}: {describe(cfg.model.dtype)}")
    # format, observation and argument order are the config's (config.yaml), not restated here
    meta = RunInfo(dtype=describe(cfg.model.dtype), dropped_train=str(dropped_train),
                   dropped_dev=str(dropped_dev) if dropped_dev else None, new_special_tokens=len(new_ids),
                   prepared_special_rows=tokenizer.convert_ids_to_tokens(fixed_ids), packed_rows=cfg.data.packing)
    return Prepared(cfg, model, tokenizer, train, dev, meta, fixed_ids)

"""The training run's configuration: small frozen dataclasses, loaded from YAML whose keys are field paths.

`load_config("configs/lora.yaml", ["train.lr=1e-4", "method.r=16"])` reads the file, applies dotted overrides (values
parsed as YAML scalars), then builds the dataclasses; unknown keys and bad values raise `InputError` naming the key
path.
Each dataclass checks its own values in `__post_init__`, next to the fields.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tooltune import hardware
from tooltune.dialogue import ARGUMENT_ORDERS, AS_WRITTEN
from tooltune.errors import InputError
from tooltune.jsonio import atomic_write_text
from tooltune.train.frozen import parse_layers
from tooltune.train.methods import METHODS

DTYPES = (*hardware.DTYPES, "auto")
MIXED_PRECISION = ("no", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")


def check_field(ok: bool, key: str, message: str) -> None:
    """An `InputError` naming the config key `key` unless `ok` (the dataclasses' checks, next to their fields)."""
    if not ok:
        raise InputError(message, field=key)


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""
    """Local directory of a Hugging Face causal LM (config.json + weights) and its tokenizer."""
    dtype: str = "auto"
    """Weight dtype to load: float32, bfloat16, float16, or auto: bfloat16 where bf16 is native (a GPU, a CPU with
    AVX512-BF16 or AMX), float32 elsewhere (tooltune.hardware)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower); refused for methods that cannot use it."""
    tokenizer: str = ""
    """Tokenizer directory when it differs from `path`."""

    def __post_init__(self):
        check_field(self.dtype in DTYPES, "model.dtype", f"must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


@dataclass(frozen=True)
class MethodConfig:
    name: str = "lora"
    """PEFT method, a key of `tooltune.train.methods.METHODS`: prompt, ptuning, prefix, lora, dora, qlora, adalora,
    full."""
    r: int = 8
    """LoRA/DoRA/QLoRA rank (AdaLoRA uses init_r/target_r)."""
    alpha: int = 16
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA input path."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Module names that get adapters (LoRA family); ["all-linear"] targets every linear layer but the head."""
    num_virtual_tokens: int = 16
    """Virtual tokens for prompt, ptuning and prefix."""
    encoder: str = "MLP"
    """P-Tuning prompt encoder: MLP or LSTM."""
    encoder_hidden_size: int = 128
    """Hidden size of the P-Tuning encoder or the prefix projection."""
    prefix_projection: bool = False
    """Prefix-Tuning: reparameterise the prefix through a two-layer MLP (Prefix-Tuning) instead of raw (P-Tuning v2)."""
    init_r: int = 12
    """AdaLoRA: starting rank of every adapted matrix."""
    target_r: int = 8
    """AdaLoRA: average rank the budget shrinks to."""
    tinit: int = 0
    """AdaLoRA: optimizer steps of warm-up before ranks are pruned."""
    tfinal: int = 0
    """AdaLoRA: final optimizer steps at the target budget (ranks frozen)."""
    delta_t: int = 1
    """AdaLoRA: reallocate ranks every this many optimizer steps."""
    orth_reg_weight: float = 0.5
    """AdaLoRA: weight of the orthogonality regulariser on P and Q."""
    layers: str = "all"
    """Which decoder layers get adapters (LoRA family): all, or top:K, the last K only; the layers below then run
    without autograd, so the backward pass stops at the lowest adapted layer (see train.cache_frozen)."""

    def __post_init__(self):
        check_field(self.name in METHODS, "method.name", f"unknown method {self.name!r}; known: {', '.join(METHODS)}")
        for key in ("r", "alpha", "num_virtual_tokens", "encoder_hidden_size", "init_r", "target_r", "delta_t"):
            check_field(getattr(self, key) > 0, f"method.{key}", "must be positive")
        check_field(0 <= self.dropout < 1, "method.dropout", "must be in [0, 1)")
        check_field(self.encoder in ("MLP", "LSTM"), "method.encoder", f"must be MLP or LSTM, not {self.encoder!r}")
        check_field(self.target_r <= self.init_r, "method.target_r", "must not exceed method.init_r")
        check_field(self.tinit >= 0 and self.tfinal >= 0, "method.tinit", "tinit and tfinal must be >= 0")
        check_field(bool(self.target_modules), "method.target_modules", "must name at least one module")
        if parse_layers(self.layers) is not None:
            method = METHODS[self.name]
            check_field(method.peft_config is not None and not method.virtual_tokens, "method.layers",
                        f"top:K needs an adapter method (lora, dora, qlora, adalora), not {self.name}: the others "
                        f"change the input or every layer")


@dataclass(frozen=True)
class DataConfig:
    train: str = ""
    """Training file: JSONL of dialogues (rendered with `format`) or of encoded examples {input_ids, labels}."""
    dev: str = ""
    """Dev file (same kind as `train`); empty: no dev-loss evaluation."""
    format: str = ""
    """Chat format name (a key of tooltune.formats.FORMATS); empty: the files hold encoded examples already."""
    policy: str = "all"
    """Which model turns of a dialogue are trained: all (every call and reply) or last (only the final one)."""
    observation: str = "full"
    """How tool results are rendered: full (every record field) or compact (fields the model does not need dropped)."""
    max_length: int = 2048
    """Longest example in tokens. Dialogues are cut from the front to fit (whole turns, reported); encoded examples
    that are longer are left out, counted and reported."""
    group_by_length: bool = True
    """Batch examples of similar length together (shuffled in mega-batches) so that padding is small."""
    packing: bool = False
    """Pack several training examples into rows of max_length tokens (position ids restart per example, so attention
    stays within each): no padding at all. Not for prompt/ptuning/prefix, whose virtual tokens would be shared."""
    loss_weights: str = ""
    """Weight each training dialogue's token losses by its category (slot-keys, turn-type or facility; empty: none):
    w = n / (C * n_c), so every category weighs the same in total and the weights average 1
    (tooltune.curation.balance)."""
    call_weight: float = 1.0
    """The loss weight of the tokens of tool calls, replies keeping 1: slot values are few tokens among many reply
    tokens, and replies overfit first (bench/results/learning_curve.md). The loss stays divided by the plain count of
    trained tokens, so a weight of 2 gives the calls twice their say in each step."""

    argument_order: str = AS_WRITTEN
    """How calls' arguments are rendered: as-written (the data's order) or schema (the tool schema's property order,
    which puts the course's `type` right after `name` instead of last). Inference renders earlier calls the same way."""

    def __post_init__(self):
        check_field(self.max_length > 1, "data.max_length", "must be > 1")
        check_field(self.policy in ("all", "last"), "data.policy", f"must be all or last, not {self.policy!r}")
        check_field(self.observation in ("full", "compact"), "data.observation",
                    f"must be full or compact, not {self.observation!r}")
        check_field(self.loss_weights in ("", "slot-keys", "turn-type", "facility"), "data.loss_weights",
                    f"must be empty, slot-keys, turn-type or facility, not {self.loss_weights!r}")
        check_field(self.call_weight > 0, "data.call_weight", f"must be above 0, not {self.call_weight}")
        check_field(self.argument_order in ARGUMENT_ORDERS, "data.argument_order",
                    f"must be {' or '.join(ARGUMENT_ORDERS)}, not {self.argument_order!r}")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 4
    """Examples per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the loss is normalised by the trained tokens of the whole step."""
    epochs: float = 1.0
    """Passes over the training data (used when max_steps is 0)."""
    max_steps: int = 0
    """Optimizer steps to run; 0: derived from epochs."""
    max_minutes: float = 0.0
    """Wall-clock cap on the training steps, in minutes from the first step (0: none). When it is reached, the step
    under way ends the run as a last step would (dev loss evaluated, best kept, adapter saved; loading and saving are
    outside it), so a run fits a time budget whatever the machine's speed. The schedule stays the planned one. With
    save_every, a checkpoint of that step is written too, which `--resume` (with a larger cap) continues."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this; 0 disables clipping."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""
    schedule: str = "cosine"
    """Decay after warm-up: cosine, linear (both to 0) or constant."""
    mixed_precision: str = "no"
    """Autocast precision through accelerate: no, bf16, fp16 (fp16 needs CUDA)."""
    cache_frozen: bool = False
    """With method.layers=top:K: keep the frozen bottom layers' output for each training (and dev) example from its
    first pass and reuse it in later epochs, which then run only the top K layers (exact; in memory, size in
    run.json)."""
    output_vocab: str = "all"
    """The training softmax's vocabulary: all, or domain: only the token ids of the training data (the rows
    `eval --domain-vocab` decodes with); a different objective, far cheaper with a large vocabulary."""
    skip_padding_mask: bool = True
    """Run right-padded batches without their attention mask: in a causal LM no real token sees a later pad, so the
    loss is the same, and attention takes its causal kernel (half the blocks, no expanded KV heads). Checked on the
    first batch; a model whose loss changes without the mask keeps it (run.json `padding_mask`)."""
    compile: bool = False
    """Compile each decoder block with torch.compile (one compilation serves every block): faster steps on a GPU once
    the first step has paid tens of seconds of compiling; parameter names and saving are unchanged."""
    eval_every: int = 0
    """Evaluate the dev loss every this many optimizer steps (and at the end); 0: only at the end."""
    early_stopping: int = 0
    """Stop after this many evaluations without a better dev loss; 0 disables early stopping."""
    save_every: int = 0
    """Write a resumable checkpoint every this many optimizer steps; 0: none."""
    log_every: int = 1
    """Log train loss and throughput every this many optimizer steps."""
    report_to: str = "none"
    """Where the logged curves also go, through accelerate's trackers: none (log.jsonl and loss.png only),
    tensorboard (events under the run directory's `tensorboard/`: `tensorboard --logdir runs/`; the `tensorboard`
    extra), wandb or mlflow (their packages installed and configured as they document)."""
    seed: int = 0
    """Seed for initialisation, data order and dropout."""
    out: str = "runs/run"
    """Run directory: adapter, tokenizer, config.yaml, log.jsonl, loss.png, checkpoints/."""

    def __post_init__(self):
        check_field(self.lr > 0, "train.lr", "must be positive")
        for key in ("batch_size", "grad_accum", "log_every"):
            check_field(getattr(self, key) > 0, f"train.{key}", "must be positive")
        for key in ("max_steps", "warmup_steps", "eval_every", "early_stopping", "save_every"):
            check_field(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        check_field(self.epochs > 0 or self.max_steps > 0, "train.epochs", "epochs or max_steps must be positive")
        check_field(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0")
        check_field(self.max_minutes >= 0, "train.max_minutes", "must be >= 0")
        check_field(self.schedule in SCHEDULES, "train.schedule", f"must be one of {', '.join(SCHEDULES)}")
        check_field(self.mixed_precision in MIXED_PRECISION, "train.mixed_precision",
                    f"must be one of {', '.join(MIXED_PRECISION)}")
        check_field(bool(self.out), "train.out", "must name a run directory")
        check_field(self.output_vocab in ("all", "domain"), "train.output_vocab",
                    f"must be all or domain, not {self.output_vocab!r}")
        check_field(self.report_to in TRACKERS, "train.report_to",
                    f"must be one of {', '.join(TRACKERS)}, not {self.report_to!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """The PEFT method and its hyper-parameters."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and dev data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The optimisation loop."""

    def __post_init__(self):
        check_field(not self.train.cache_frozen or parse_layers(self.method.layers) is not None, "train.cache_frozen",
                    "needs method.layers=top:K: with adapters on every layer nothing below them is frozen")


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _convert(value: Any, kind: Any, key: str) -> Any:
    """`value` (from YAML) as the annotated `kind`, or an InputError naming `key`."""
    if dataclasses.is_dataclass(kind):
        return build_dataclass(kind, value, key)
    origin = typing.get_origin(kind)
    if origin is tuple:
        check_field(isinstance(value, (list, tuple)), key, f"must be a list, not {value!r}")
        return tuple(_convert(v, typing.get_args(kind)[0], f"{key}[{i}]") for i, v in enumerate(value))
    if kind is bool:
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        check_field(isinstance(value, bool), key, f"must be true or false, not {value!r}")
    elif kind is int:
        check_field(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, not {value!r}")
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        check_field(isinstance(value, (int, float)) and not isinstance(value, bool), key,
                    f"must be a number, not {value!r}")
        return float(value)
    elif kind is str:
        check_field(isinstance(value, (str, int, float)) and not isinstance(value, bool), key,
                    f"must be a string, not {value!r} (YAML reads an unquoted no/yes/on/off as a boolean: quote it)")
        return str(value)
    return value


def build_dataclass(cls: type, data: Any, prefix: str) -> Any:
    """The config dataclass `cls` from the mapping `data` (the section at key path `prefix`), values converted to the
    fields' types and nested sections built alike; an unknown key or a bad value raises `InputError` naming it."""
    where = prefix or "top level"
    if data is None:
        data = {}
    check_field(isinstance(data, dict), where, f"must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    check_field(not unknown, f"{prefix}.{unknown[0]}" if prefix and unknown else (unknown[0] if unknown else ""),
                f"unknown key; {where} takes {', '.join(sorted(names))}")
    values = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**values)


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.c=value` in the nested dict `tree`; the value is parsed as a YAML scalar or list."""
    key, sep, raw = override.partition("=")
    check_field(bool(sep) and bool(key.strip()), override, "an override must look like key.path=value")
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        check_field(isinstance(node, dict), key, f"{part} is not a section")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # YAML 1.1 reads no/yes/on/off as booleans: train.mixed_precision=no means "no"
    node[parts[-1]] = value


def config_from_dict(tree: dict) -> RunConfig:
    return build_dataclass(RunConfig, tree, "")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (or start from defaults when `path` is None), apply overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", where=str(path))
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML: {e}", where=str(path)) from None
    for override in overrides:
        apply_override(tree, override)
    try:
        return config_from_dict(tree)
    except InputError as e:
        raise e.at(str(path)) if path is not None else e


def config_to_dict(cfg: Any) -> dict:
    """The config as plain YAML-able data (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return list(v) if isinstance(v, tuple) else v
    return plain(cfg)


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))


def replace(cfg: RunConfig, **sections: dict) -> RunConfig:
    """A copy of `cfg` with fields of sections changed: `replace(cfg, train={"lr": 1e-3})` (validated again)."""
    tree = config_to_dict(cfg)
    for name, changes in sections.items():
        tree[name].update(changes)
    return config_from_dict(tree)

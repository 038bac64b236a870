"""The run directory: the names of its files and its typed `run.json`. No other module spells these names.

A run directory (what `tooltune train` and `tooltune pretrain model` write, `train.out`) holds:

- `config.yaml`: the `RunConfig` as run (`tooltune.train.config` writes and reads it). The one home of the chat
  format, observation rendering and argument order a run was trained with.
- `run.json`: `RunInfo`, what the run did (sizes, steps, losses, what was left out), written and read only here.
- `log.jsonl`: one JSON object per logged optimizer step or dev evaluation; `loss.png`: those losses plotted;
  `tensorboard/`: the same curves as TensorBoard events (`train.report_to=tensorboard`).
- `checkpoints/step-N/`: resumable checkpoints (`tooltune.train.checkpoint` names the files inside).
- the adapter (`adapter_config.json`, `adapter_model.safetensors`) or, for full fine-tuning and pre-training, the
  whole model (`config.json` + weights); the tokenizer (`tokenizer_config.json`, ...) unless the run added no token
  and ships without one (bench/artifacts/g7).

A model folder that is not a run (a merged export, or a model saved by hand) may hold `tooltune_run.json`, a
`RunInfo` that names at least what inference needs (`format`, and `observation`, `argument_order`, `method`), and a
merged export `tooltune_export.json` (where it was merged from).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tooltune.errors import InputError
from tooltune.jsonio import atomic_write_text, read_json
from tooltune.train.config import RunConfig, dump_config, load_config

CONFIG = "config.yaml"
INFO = "run.json"
LOG = "log.jsonl"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
"""TensorBoard's event files (train.report_to=tensorboard)."""
MODEL_INFO = "tooltune_run.json"
"""A model folder's RunInfo (a merged export, or a model saved by hand)."""
EXPORT_INFO = "tooltune_export.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
"""A Hugging Face model's own config (a full run, a merged export, a base model folder)."""
TOKENIZER_CONFIG = "tokenizer_config.json"
PRETRAIN_KIND = "pretrain gpt2"
"""`RunInfo.kind` of a `tooltune pretrain model` run: a base model, loaded as one (not as a fine-tuning run)."""


def checkpoint_dir(run: Path, step: int) -> Path:
    """The checkpoint of optimizer step `step`."""
    return Path(run) / CHECKPOINTS / f"step-{step}"


def checkpoint_dirs(run: Path) -> list[Path]:
    """Every `checkpoints/step-*` folder of `run` (complete or not), in no particular order."""
    folder = Path(run) / CHECKPOINTS
    return list(folder.glob("step-*")) if folder.is_dir() else []


@dataclass(frozen=True)
class RunInfo:
    """What `run.json` holds. Every field is optional: a field that is None is not written (a pre-training run has
    no `format`, a run without dev data no dev loss), and a model folder's `tooltune_run.json` may name only the few
    that inference needs. Reading refuses a key that is not a field, naming the file and the key."""

    # The loop (tooltune.train.loop), before the first step
    method: str | None = None
    base_model: str | None = None
    train_examples: int | None = None
    dev_examples: int | None = None
    total_steps: int | None = None
    processes: int | None = None
    distributed_type: str | None = None
    device: str | None = None
    dropped_batches_per_epoch: int | None = None
    trainable_parameters: int | None = None
    loss_path: str | None = None
    """Whether the loss ran at trained positions only or over full logits (and why)."""
    padding_mask: str | None = None
    """Whether right-padded batches ran without their attention mask (train.skip_padding_mask), and why not."""
    compiled_blocks: int | None = None
    adapted_layers: str | None = None
    frozen_layers: int | None = None
    output_vocab: int | str | None = None
    """Token ids of the training softmax, or "all"."""
    # The fine-tuning recipe (tooltune.train.recipe)
    dtype: str | None = None
    """The weights' dtype as resolved on the training machine, and why."""
    format: str | None = None
    """Chat format. A run directory keeps it in config.yaml (`data.format`); here only in a model folder's
    tooltune_run.json, and in run.json of runs written before config.yaml was its one home."""
    observation: str | None = None
    """As `format`: `data.observation`."""
    argument_order: str | None = None
    """As `format`: `data.argument_order`."""
    dropped_train: str | None = None
    dropped_dev: str | None = None
    new_special_tokens: int | None = None
    prepared_special_rows: list | None = None
    packed_rows: bool | None = None
    # Pre-training (tooltune.pretrain.model)
    kind: str | None = None
    """PRETRAIN_KIND for a pre-trained base model."""
    gpt2: dict | None = None
    train_documents: int | None = None
    dev_documents: int | None = None
    train_tokens: int | None = None
    parameters: int | None = None
    # The end of the run
    interrupted_at: int | None = None
    """Set in memory only, by a test's `stop_after`: such a run writes no run.json."""
    stopped_for_time: dict | None = None
    frozen_cache_bytes: int | None = None
    frozen_cache_hits: int | None = None
    frozen_cache_misses: int | None = None
    steps: int | None = None
    final_train_loss: float | None = None
    best_dev_loss: float | None = None
    stopped_early: bool | None = None
    saved: str | None = None
    """Which weights the run directory holds: "best dev loss", "last step", "checkpoint step-N"."""
    best_dev_perplexity: float | None = None
    # `tooltune export --checkpoint` (tooltune.train.export.checkpoint_run)
    checkpoint_of: str | None = None
    epoch: int | None = None
    # bench/g7_artifact.py, a run shipped with the repository
    artifact: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, in field order (run.json's key order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @property
    def pretrained(self) -> bool:
        """A `tooltune pretrain model` run: a base model, not a fine-tuning run."""
        return str(self.kind or "").startswith("pretrain")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunInfo:
        """A RunInfo from parsed JSON; `where` (the file) locates a bad document or an unknown key."""
        if not isinstance(data, dict):
            raise InputError("must be a JSON object", where=where)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown key (not a field of tooltune.rundir.RunInfo); {len(unknown)} unknown: "
                             f"{', '.join(unknown)}", where=where, field=unknown[0])
        return cls(**data)


def write_info(folder: Path, info: RunInfo, name: str = INFO) -> None:
    """`folder/run.json` (or `name`), written under a temporary name and renamed."""
    atomic_write_text(Path(folder) / name, json.dumps(info.to_dict(), indent=1, ensure_ascii=False))


def read_info(folder: Path, name: str = INFO) -> RunInfo | None:
    """`folder/run.json` (or `name`); None when there is none."""
    path = Path(folder) / name
    return RunInfo.from_dict(read_json(path), str(path)) if path.is_file() else None


def has_config(run: Path) -> bool:
    return (Path(run) / CONFIG).is_file()


def read_config(run: Path) -> RunConfig:
    """The run's `config.yaml` through the config loader (unknown keys and bad values are errors naming the file)."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise InputError(f"not a tooltune run directory (no {CONFIG})", where=str(run))
    return load_config(path)


def write_config(run: Path, cfg: RunConfig) -> None:
    dump_config(cfg, Path(run) / CONFIG)

"""Experiment trackers through accelerate (`train.report_to`): the loop's log entries as curves in TensorBoard,
Weights & Biases or MLflow, beside the run directory's own log.jsonl (which stays the record tooltune reads).

Each entry of the loop's log becomes one `accelerator.log` at its optimizer step, under the tags of `TAGS`; the
run's config goes in as hyper-parameters. Only the main process writes (accelerate's trackers live there).
"""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

from tooltune import rundir
from tooltune.errors import ToolTuneError
from tooltune.train.config import RunConfig, config_to_dict

TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "tokens_per_s": "train/tokens_per_s",
        "trained_tokens_per_s": "train/trained_tokens_per_s", "dev_loss": "dev/loss",
        "dev_perplexity": "dev/perplexity", "adalora_total_rank": "method/adalora_total_rank",
        "adalora_budget": "method/adalora_budget"}
"""log.jsonl key -> tracker tag. The loss is per trained token; tokens/s count every token of the batches."""

INSTALLED = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
INSTALL = {"tensorboard": "pip install -e '.[tensorboard]'", "wandb": "pip install wandb",
           "mlflow": "pip install mlflow"}


def accelerator_kwargs(cfg: RunConfig) -> dict:
    """What `Accelerator(...)` needs for the run's tracker: nothing for `none`; refused when it is not installed."""
    name = cfg.train.report_to
    if name == "none":
        return {}
    if not INSTALLED[name]():
        raise ToolTuneError(f"train.report_to={name} needs the {name} package, which is not installed: {INSTALL[name]}")
    return {"log_with": name, "project_dir": cfg.train.out}


def start(accelerator, cfg: RunConfig) -> None:
    """Open the tracker (TensorBoard: events in the run directory's `tensorboard/`; W&B, MLflow: a run named after
    the run directory) with the config as hyper-parameters."""
    name = cfg.train.report_to
    if name == "none":
        return
    run_name = Path(cfg.train.out).name
    project = rundir.TENSORBOARD if name == "tensorboard" else "tooltune"
    init = {"wandb": {"wandb": {"name": run_name}}, "mlflow": {"mlflow": {"run_name": run_name}}}.get(name, {})
    accelerator.init_trackers(project, config=hyperparameters(cfg), init_kwargs=init)


def hyperparameters(cfg: RunConfig) -> dict[str, str | int | float | bool]:
    """The config as flat `section.key` scalars (lists as text), the types every tracker takes."""
    flat = {f"{s}.{k}": v for s, sub in config_to_dict(cfg).items() for k, v in sub.items()}
    return {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in flat.items()}


def log(accelerator, entry: dict) -> None:
    """One log.jsonl entry at its step: the numbers `TAGS` names (a grad norm of None, not clipped, is left out)."""
    values = {TAGS[k]: float(v) for k, v in entry.items()
              if k in TAGS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if values and accelerator.trackers:
        accelerator.log(values, step=entry["step"])


def finish(accelerator) -> None:
    """Close the trackers (flushes TensorBoard's events). Not `accelerator.end_training`, which would also end the
    process group that a caller training several runs in one launch (k-fold) still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()

"""K-fold training for scarce data (lecture 12.5, 交叉验证): K runs, each holding out one stratified part as its dev set.

The training dialogues (`data.train`) are dealt into K parts by `tooltune.dataset.split.kfold`, stratified by the
build's stratum (argument keys used, single vs multi search), so every fold's dev set has the whole set's mix. Fold i
trains on the other K-1 parts and evaluates on part i: the dev loss always, and with `eval_limit` > 0 the course's
metrics (slot P/R/F1, BLEU-4) on the first `eval_limit` turn units of its dev part. `data.dev` of the config is not
used (each fold's dev is its held-out part). Layout: `<train.out>/fold-<i>/` (train.jsonl, dev.jsonl and the run),
`<train.out>/kfold.json` and `kfold.md` with each fold and the mean +- standard deviation (sample, n-1).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from tooltune.curation.balance import slot_keys_category
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.dataset.split import kfold
from tooltune.dialogue import Dialogue
from tooltune.errors import ToolTuneError
from tooltune.evaluate.run import EvalOptions, evaluate_run
from tooltune.jsonio import atomic_write_text
from tooltune.train.config import RunConfig, replace
from tooltune.train.recipe import fine_tune

METRICS = ("dev_loss", "slot_p", "slot_r", "slot_f1", "bleu4")


def stratum(d: Dialogue) -> tuple[str, str]:
    """The build's stratum (`tooltune.dataset.split.stratum`) of a plain dialogue."""
    return slot_keys_category(d), "multi" if len(d.calls) > 1 else "single"


def fold_metrics(run_dir: Path, dev: list[Dialogue], limit: int, batch_size: int = 8) -> dict[str, float]:
    """Course metrics of a fold's run on the first `limit` turn units of its dev dialogues."""
    options = EvalOptions(limit=limit, split="dev", batch_size=batch_size, task_success=False, rouge=False)
    m = evaluate_run(run_dir, dev, options).metrics
    return {k: m[k] for k in ("slot_p", "slot_r", "slot_f1", "bleu4")}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def train_kfold(cfg: RunConfig, k: int, eval_limit: int = 0, seed: int | None = None) -> dict:
    """Train the K folds; returns {"folds": [per-fold metrics], "mean": {...}, "std": {...}} (also written)."""
    if not cfg.data.format:
        raise ToolTuneError("--kfold needs dialogues (data.format set): encoded examples cannot be stratified")
    dialogues = read_dialogues(cfg.data.train)
    if len(dialogues) < k:
        raise ToolTuneError(f"{cfg.data.train}: {len(dialogues)} dialogues cannot make {k} folds")
    out = Path(cfg.train.out)
    folds = kfold(dialogues, stratum, k, cfg.train.seed if seed is None else seed)
    rows = []
    for i, (train, dev) in enumerate(folds):
        fold_dir = out / f"fold-{i}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_dialogues(train, fold_dir / "train.jsonl", "seed")
        write_dialogues(dev, fold_dir / "dev.jsonl", "seed")
        fold_cfg = replace(cfg, data={"train": str(fold_dir / "train.jsonl"), "dev": str(fold_dir / "dev.jsonl")},
                           train={"out": str(fold_dir / "run")})
        info = fine_tune(fold_cfg)
        row = {"fold": i, "train": len(train), "dev": len(dev), "dev_loss": info.best_dev_loss}
        if eval_limit > 0:
            row.update(fold_metrics(fold_dir / "run", dev, eval_limit))
        rows.append(row)
        print(f"fold {i}: " + ", ".join(f"{key} {row[key]:.4g}" for key in METRICS if row.get(key) is not None))
    keys = [key for key in METRICS if all(r.get(key) is not None for r in rows)]
    stats = {key: mean_std([r[key] for r in rows]) for key in keys}
    result = {"k": k, "folds": rows, "mean": {key: s[0] for key, s in stats.items()},
              "std": {key: s[1] for key, s in stats.items()}, "eval_limit": eval_limit}
    atomic_write_text(out / "kfold.json", json.dumps(result, indent=1))
    atomic_write_text(out / "kfold.md", kfold_table(result))
    return result


def kfold_table(result: dict) -> str:
    keys = list(result["mean"])
    lines = ["| fold | train | dev | " + " | ".join(keys) + " |", "| --- | ---: | ---: |" + " ---: |" * len(keys)]
    for r in result["folds"]:
        lines.append(f"| {r['fold']} | {r['train']} | {r['dev']} | " + " | ".join(f"{r[key]:.4f}" for key in keys)
                     + " |")
    lines.append("| mean +- std | | | " + " | ".join(f"{result['mean'][key]:.4f} +- {result['std'][key]:.4f}"
                                                    for key in keys) + " |")
    return "\n".join(lines) + "\n"

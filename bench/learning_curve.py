"""Dev SLOT-F1 and BLEU-4 against training minutes and epochs, from a run's checkpoints (one per evaluation point).

    python bench/learning_curve.py runs/g7 [runs/g8 ...] [--limit 150] [--name G7 --name G8 ...]

Each complete checkpoint `RUN/checkpoints/step-N` is turned into a run of its own (`tooltune export RUN --checkpoint
N --out RUN-curve/step-N`) and scored on the first LIMIT dev turn units exactly as the run's own evaluation would be
(`tooltune eval ... --max-new-tokens 160 --batch-size 16 --domain-vocab`, the run's dtype). The run's saved adapter
(the best dev loss) is scored too when no checkpoint holds its step. Finished points are skipped on a re-run. Minutes
are the training loop's own clock at that step (log.jsonl `elapsed_s`: steps and dev-loss evaluations, without
loading). Several runs are plotted side by side (one `--name` each, in order). Writes bench/results/learning_curve.md
and learning_curve.png, with G4's settings (measured earlier on the same 150 dev units, float32 decoding;
bench/results/quality.md) as reference points.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tooltune import rundir  # noqa: E402
from tooltune.train.checkpoint import PROGRESS  # noqa: E402

DEV = "../shared/data/hotel/v3_chatglm3_llama2/dev.chatglm3.jsonl"
# G4's configuration (float32, every layer, dropout 0.05, full vocabulary), first 150 dev units, float32 decoding:
# run G6 (300 steps, 2,506 s of training) and run G4 (600 steps, 91 minutes), bench/results/quality.md.
G4_SETTINGS = [{"label": "G6 (G4's settings, 300 steps)", "minutes": 2506 / 60, "epochs": 300 / 401,
                "slot_f1": 87.89, "bleu4": 59.45},
               {"label": "G4 (600 steps)", "minutes": 91.0, "epochs": 600 / 401, "slot_f1": 94.82, "bleu4": 63.36}]


def tooltune(*args: str) -> None:
    cmd = [sys.executable, "-m", "tooltune", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def log_entries(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / rundir.LOG).read_text(encoding="utf-8").splitlines() if line.strip()]


def points(run: Path) -> list[tuple[int, Path | None]]:
    """(step, checkpoint dir or None for the run's own adapter), by step."""
    steps = sorted((int(m.group(1)), p) for p in rundir.checkpoint_dirs(run)
                   if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / PROGRESS).is_file())
    evals = [e for e in log_entries(run) if "dev_loss" in e]
    best = min(evals, key=lambda e: e["dev_loss"])["step"] if evals else None
    if best is not None and best not in {s for s, _ in steps}:
        steps.append((best, None))
    return sorted(steps, key=lambda sp: sp[0])


def steps_per_epoch(run: Path) -> int:
    """Optimizer steps in one pass over the training data, as the loop plans them (one process)."""
    train = rundir.read_config(run).train
    examples = rundir.read_info(run).train_examples
    return math.ceil(math.ceil(examples / train.batch_size) / train.grad_accum)


def score(run: Path, step: int, checkpoint: Path | None, dev: str, limit: int, fixed: bool = False) -> dict:
    curve = run.parent / f"{run.name}-curve"
    model = run if checkpoint is None else curve / f"step-{step}"
    out = curve / f"step-{step}-dev"
    if not (out / "metrics.json").is_file():
        if checkpoint is not None and not (model / rundir.INFO).is_file():
            tooltune("export", str(run), "--checkpoint", str(step), "--out", str(model))
        tooltune("eval", str(model), "--data", dev, "--out", str(out), "--limit", str(limit), "--max-new-tokens",
                 "160", "--batch-size", "16", "--domain-vocab", *(["--no-continuous-batching"] if fixed else []))
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def curve(run: Path, dev: str, limit: int, min_epochs: float = 0.0, fixed: bool = False) -> list[dict]:
    """One row per scored point of `run` (from `min_epochs` epochs on)."""
    log = log_entries(run)
    per_epoch = steps_per_epoch(run)
    rows = []
    for step, checkpoint in points(run):
        if step < min_epochs * per_epoch:
            continue
        at = [e for e in log if e.get("step") == step]
        minutes = max((e["elapsed_s"] for e in log if "elapsed_s" in e and e["step"] <= step), default=0) / 60
        dev_loss = next((e["dev_loss"] for e in at if "dev_loss" in e), None)
        m = score(run, step, checkpoint, dev, limit, fixed)
        metrics = m["metrics"]
        valid = metrics.get("valid_calls", {})
        rows.append({"step": step, "epochs": step / per_epoch, "minutes": minutes, "dev_loss": dev_loss,
                     "bleu4": metrics["bleu4"], "slot_p": metrics["slot_p"], "slot_r": metrics["slot_r"],
                     "slot_f1": metrics["slot_f1"], "valid": valid, "source": "adapter" if checkpoint is None else
                     f"checkpoints/step-{step}", "seconds": m.get("generation_seconds")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--dev", default=DEV)
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--name", action="append", default=[], help="each run's name in the plot (default: G7)")
    parser.add_argument("--min-epochs", type=float, action="append", default=[],
                        help="per run (in order): score only its points from this many epochs on (default 0)")
    parser.add_argument("--fixed-batches", action="store_true",
                        help="decode in fixed batches (eval --no-continuous-batching), as the points scored before "
                             "continuous batching were")
    parser.add_argument("--note", default="", help="a sentence added under the tables")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learning_curve")
    args = parser.parse_args()
    args.name = args.name or ["G7"]
    if len(args.name) != len(args.runs):
        parser.error(f"{len(args.runs)} runs and {len(args.name)} --name: give one name per run")
    firsts = args.min_epochs + [0.0] * (len(args.runs) - len(args.min_epochs))
    write(args, {name: curve(run, args.dev, args.limit, first, args.fixed_batches)
                 for name, run, first in zip(args.name, args.runs, firsts)})


def write(args, curves: dict[str, list[dict]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = args.out.with_suffix(".png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "slot_f1", "dev SLOT-F1"), (axes[1], "bleu4", "dev BLEU-4")):
        for name, rows in curves.items():
            ax.plot([r["minutes"] for r in rows], [r[key] for r in rows], "o-", label=name)
            for r in rows:
                ax.annotate(f"{r['epochs']:.0f} ep", (r["minutes"], r[key]), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7)
        ax.plot([p["minutes"] for p in G4_SETTINGS], [p[key] for p in G4_SETTINGS], "s--", color="gray",
                label="G4's settings (G6, G4)")
        ax.set_xlabel("training minutes on 2 CPU cores")
        ax.set_title(f"{title}, first {args.limit} dev turn units")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    cmd = " ".join(["python", "bench/learning_curve.py", *map(str, args.runs), "--limit", str(args.limit),
                    *(f"--name {n}" for n in args.name), *(f"--min-epochs {e:g}" for e in args.min_epochs),
                    *(["--fixed-batches"] if args.fixed_batches else []),
                    *(["--note", f"'{args.note}'"] if args.note else [])])
    lines = [f"# Learning curve: run{'s' if len(curves) > 1 else ''} {', '.join(curves)} on dev", "",
             f"Made by `{cmd}` (each point: `tooltune export RUN --checkpoint STEP`, then `tooltune eval` on the first "
             f"{args.limit} dev turn units, greedy, domain vocabulary, the run's dtype). Minutes: the training loop's "
             f"clock at that step (steps and dev-loss evaluations, loading not included). Plot: "
             f"[learning_curve.png](learning_curve.png)."]
    for name, rows in curves.items():
        lines += ["", f"{name} ({args.runs[args.name.index(name)]}):", "",
                  "| step | epochs | training minutes | dev loss | BLEU-4 | SLOT-P | SLOT-R | SLOT-F1 | weights |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rows:
            loss = f"{r['dev_loss']:.4f}" if r["dev_loss"] is not None else "-"
            lines.append(f"| {r['step']} | {r['epochs']:.2f} | {r['minutes']:.1f} | {loss} | {r['bleu4']:.2f} | "
                         f"{r['slot_p']:.2f} | {r['slot_r']:.2f} | {r['slot_f1']:.2f} | {r['source']} |")
    lines += ["", "Each run's points are checkpoints of one run whose cosine schedule was planned over all its epochs, "
              "so the early ones were taken at a high learning rate; G6 and G4 are separate runs, each decayed to "
              "zero.", *([args.note] if args.note else []),
              "", "G4's settings on the same units (float32 decoding, bench/results/quality.md):", ""]
    for p in G4_SETTINGS:
        lines.append(f"- {p['label']}: {p['minutes']:.0f} minutes of training, {p['epochs']:.2f} epochs, "
                     f"SLOT-F1 {p['slot_f1']:.2f}, BLEU-4 {p['bleu4']:.2f}")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out.with_suffix('.md')} and {png}")


if __name__ == "__main__":
    main()

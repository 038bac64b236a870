"""Each lever of the headline result alone, against the demo's LoRA run, at the demo's budget, scored on dev.

    PYTHONPATH=src python bench/levers.py --demo demo --out runs/levers --limit 150
    PYTHONPATH=src python bench/levers.py --demo /tmp/d --out /tmp/lv --steps 2 --limit 4 --levers baseline,lr  # smoke

The baseline is the demo's fine-tuning config as it was when these levers were measured (LoRA r=16 on every linear
layer, lr 3e-4, arguments as written, llama2 format, compact observations, 40 steps of 4 dialogues, seed 0; the demo
now runs the "order" row's lr 1e-3 and schema order); every other row changes one thing. "seed 1" changes only the seed:
the difference it makes is the noise against which the other rows are read. Each row trains into OUT/NAME (skipped
when its run.json exists), is evaluated into OUT/NAME-SPLIT with the demo's decoding, and the table replaces the
marked section of `--results`. Choose on dev; run test once per configuration you report.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from quality import (
    _write_section,
    common_arguments,
    demo_base,
    hardware,
    method_tree,
    run_main,
    subset,
    train_timed,
)

from tooltune import paths, rundir
from tooltune.demo import PYPI, with_budget
from tooltune.errors import ToolTuneError

from shown import command  # bench/ is the script's own folder

# name: (what changes, config overrides on the baseline). A value `@ALIAS` is the folder `tooltune model prepare
# ALIAS` writes; `@balanced` is the rebalanced course train split (`balanced_train`).
LEVERS = {
    "baseline": ("the demo's LoRA run", []),
    "seed": ("seed 1 instead of 0", ["train.seed=1"]),
    "lr": ("peak lr 1e-3 instead of 3e-4", ["train.lr=1e-3"]),
    "lr-seed": ("peak lr 1e-3 and seed 1 (does the lr's effect hold on the other seed?)",
                ["train.lr=1e-3", "train.seed=1"]),
    "order": ("peak lr 1e-3 and calls' arguments in the schema's order (`data.argument_order=schema`; read against lr)",
              ["train.lr=1e-3", "data.argument_order=schema"]),
    "order-seed": ("as order, seed 1 (read against lr-seed)", ["train.lr=1e-3", "data.argument_order=schema", "train.seed=1"]),
    "rank": ("LoRA r=64, alpha 128 instead of r=16, alpha 32", ["method.r=64", "method.alpha=128"]),
    "observation": ("full observations instead of compact", ["data.observation=full"]),
    "chatglm3": ("ChatGLM3 role-token format instead of llama2", ["data.format=chatglm3"]),
    "smollm2": ("base SmolLM2-135M-Instruct instead of Gemma-3-270M", ["model.path=@smollm2-135m"]),
    "balance": ("train split rebalanced by slot keys (`data balance --by slot-keys --strategy augment`)",
                ["data.train=@balanced"]),
    "weights": ("loss weights by slot keys (`data.loss_weights=slot-keys`)", ["data.loss_weights=slot-keys"]),
}
BEGIN, END = "<!-- bench/levers.py: begin -->", "<!-- bench/levers.py: end -->"


def balanced_train(data_dir: Path, out: Path) -> Path:
    """The course train split rebalanced as `tooltune data balance TRAIN OUT --by slot-keys --strategy augment`."""
    from tooltune.datafiles import read_dialogues, write_dialogues
    from tooltune.curation.balance import balance

    path = out / "train.balanced-slot-keys.jsonl"
    if not path.is_file():
        dialogues = read_dialogues(data_dir / paths.COURSE_SPLIT / "train.chatglm3.jsonl")
        out.mkdir(parents=True, exist_ok=True)
        write_dialogues(balance(dialogues, "slot-keys", "augment").dialogues, path, "seed")
    return path


def lever_tree(name: str, model_dir: Path, run_dir: Path, data_dir: Path, steps: int) -> dict:
    """The demo's LoRA config with lever `name`'s overrides applied."""
    from tooltune.models.load import prepared_dir
    from tooltune.train.config import apply_override

    tree = method_tree("lora", model_dir, run_dir, data_dir, steps, gpt2=False)
    for override in LEVERS[name][1]:
        key, _, value = override.partition("=")
        if value == "@balanced":
            value = str(balanced_train(data_dir, run_dir.parent))
        elif value.startswith("@"):
            alias, value = value[1:], str(prepared_dir(value[1:]))
            if not (Path(value) / "config.json").is_file():
                raise ToolTuneError(f"lever {name}: {value} is missing; run `tooltune model prepare {alias}` first")
        apply_override(tree, f"{key}={value}")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, "runs/levers")
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated subset of {', '.join(LEVERS)}")
    parser.add_argument("--steps", type=int, default=PYPI.finetune_steps, help="optimizer steps for every row")
    return run_main("levers", parser, _run, argv)


def _run(args: argparse.Namespace) -> int:
    from tooltune.demo import evaluate
    from tooltune.evaluate.report import read_metrics, render_table, table_rows

    names = subset(args.levers, LEVERS, "levers")
    model_dir = demo_base(args.demo)
    data_dir = paths.data_dir(args.data_dir)
    split_file = data_dir / paths.COURSE_SPLIT / f"{args.split}.chatglm3.jsonl"
    budget = with_budget(PYPI, eval_limit=args.limit)
    rows = []
    for name in names:
        run_dir = args.out / name
        train_timed(name, run_dir, partial(lever_tree, name, model_dir, run_dir, data_dir, args.steps))
        eval_dir = args.out / f"{name}-{args.split}"
        if not (eval_dir / "metrics.json").is_file():
            evaluate(run_dir, split_file, eval_dir, budget, args.data_dir)
        rows.append((name, run_dir, read_metrics(eval_dir)))
    lines = table_rows([metrics for _, _, metrics in rows], extra=True)
    lines[0][:2] = ["lever", "what changes"]
    lines[0] += ["train s", "tokens/s"]
    for (name, run_dir, _), line in zip(rows, lines[1:]):
        last = [json.loads(row) for row in (run_dir / rundir.LOG).read_text(encoding="utf-8").splitlines()][-1]
        line[:2] = [name, LEVERS[name][0]]
        line += [(run_dir / "bench_seconds.txt").read_text().strip(), f"{last['tokens_per_s']:.0f}"]
    # Slot F1 per key (what rebalancing is meant to move), with each key's gold slots in the scored units.
    by_key = [m["metrics"].get("slot_by_key", {}) for _, _, m in rows]
    gold = {k: v["gold"] for keys in by_key for k, v in keys.items()}
    per_key = [["lever", "SLOT-F1", *(f"{k} ({gold[k]})" for k in sorted(gold))]]
    for (name, _, m), keys in zip(rows, by_key):
        per_key.append([name, f"{m['metrics']['slot_f1']:.1f}",
                        *(f"{keys[k]['f1']:.1f}" if k in keys else "-" for k in sorted(gold))])
    limit = f", first {args.limit} units" if args.limit else ""
    section = "\n".join([BEGIN, f"Command: `{command('levers.py', env='PYTHONPATH=src')}`  ",
                         (f"Hardware: {hardware()}. Split: {args.split}{limit}, turn mode. Base {model_dir.name} "
                          f"unless the row says otherwise, {args.steps} optimizer steps of 4 dialogues."), "",
                         render_table(lines, markdown=True), "",
                         "Slot F1 per key (gold slots in the scored units):", "",
                         render_table(per_key, markdown=True), END])
    print(section)
    _write_section(args.results, section, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every fine-tuning method of the lecture on the demo's base model, same budget, scored on a course split.

    PYTHONPATH=src python bench/quality.py --demo demo --split test --steps 1200
    PYTHONPATH=src python bench/quality.py --demo /tmp/d --split dev --steps 4 --limit 5 --methods lora,full  # smoke

`--demo DIR` is a folder `tooltune demo` filled (its base/ stage is used; the demo runs it first when missing). Each
method trains into OUT/METHOD (skipped when its run.json exists), is evaluated into OUT/METHOD-SPLIT, and one table in
the lecture's layout, with training seconds, trainable parameters and the hardware, replaces the part of
`--results` between the markers below (the rest of the file is left alone; `--section NAME` writes between markers
of its own instead). QLoRA runs where bitsandbytes can: on a CUDA GPU, or on the CPU with bitsandbytes>=0.50; it is
the LoRA row's adapters on the base loaded in 4 bits.
The "native" row is the base model untrained. On the whole test split the table starts with the rows to beat: the
lecture's and the demo's rules baseline. Choose on dev; run test once per configuration you report.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tooltune import paths, rundir
from tooltune.demo import DEFAULT, PYPI, finetune_tree, lecture_lines, with_budget
from tooltune.errors import ToolTuneError
from tooltune.train.methods import METHODS as TRAIN_METHODS

from shown import command  # bench/ is the script's own folder

METHODS = tuple(TRAIN_METHODS)
"""Every method of the method table, in its order."""


def markers(section: str) -> tuple[str, str]:
    """The markers around the table `--section NAME` writes (no name: the main methods table)."""
    name = f" {section}" if section else ""
    return f"<!-- bench/quality.py{name}: begin -->", f"<!-- bench/quality.py{name}: end -->"


BEGIN, END = markers("")


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    import os
    return f"CPU: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"


# Peak learning rates, fixed before any run (no tuning on dev or test). The own GPT-2 is small and fully trained by
# the demo at 1e-3; a pretrained PyPI base takes LoRA at 3e-4 (run G), full fine-tuning at 3e-5.
LR_OWN = {"prompt": 3e-3, "ptuning": 3e-3, "prefix": 3e-3, "lora": 2e-3, "dora": 2e-3, "adalora": 2e-3,
          "qlora": 2e-3, "full": 1e-3}
LR_PRETRAINED = {"prompt": 3e-3, "ptuning": 3e-3, "prefix": 3e-3, "lora": 3e-4, "dora": 3e-4, "adalora": 1e-3,
                 "qlora": 3e-4, "full": 3e-5}


def is_gpt2(model_dir: Path) -> bool:
    """Whether the base is a GPT-2 (the own one): it gets the own budget and adapters on its fused attention."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir).model_type == "gpt2"


def method_tree(method: str, model_dir: Path, run_dir: Path, data_dir: Path, steps: int, gpt2: bool) -> dict:
    """The demo's fine-tuning config for its base with `method` swapped in: on the own GPT-2, adapters target its
    fused attention projection; on a PyPI base, LoRA-like methods every linear layer of the decoder (run G)."""
    # Arguments as written, as when the methods table and the levers were measured (the demo has since moved to the
    # schema order, which bench/levers.py measures as its "order" row).
    budget = with_budget(DEFAULT if gpt2 else PYPI, finetune_steps=steps, argument_order="as-written")
    lora_like = method in ("lora", "qlora")
    tree = finetune_tree(model_dir, run_dir, data_dir, budget, method="lora" if lora_like else "full", own=gpt2)
    if method == "qlora" and not gpt2:  # the LoRA row's adapters (rank, alpha, layers) on the 4-bit base
        tree["method"]["name"] = "qlora"
    elif method not in ("full", "lora") or gpt2:
        tree["method"] = {"name": method}
        if gpt2 and method != "full":
            tree["method"]["target_modules"] = ["c_attn"]
        elif method in ("dora", "adalora"):
            tree["method"]["target_modules"] = ["all-linear"]
    tree["train"]["lr"] = (LR_OWN if gpt2 else LR_PRETRAINED)[method]
    if method == "adalora":
        tree["method"].update(tinit=steps // 10, tfinal=steps // 5)
    return tree


def train_timed(name: str, run_dir: Path, make_tree: Callable[[], dict]) -> None:
    """Train the config `make_tree()` builds into `run_dir`, writing its seconds to bench_seconds.txt; skipped (and
    the tree not built) when the run is already there."""
    from tooltune.train.config import config_from_dict
    from tooltune.train.recipe import fine_tune

    if (run_dir / rundir.INFO).is_file():
        print(f"[{name}] trained already: {run_dir}")
        return
    started = time.perf_counter()
    fine_tune(config_from_dict(make_tree()))
    (run_dir / "bench_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n", encoding="utf-8")


def common_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options this script shares with bench/levers.py."""
    parser.add_argument("--demo", type=Path, required=True, help="a folder `tooltune demo` filled (its base/ is used)")
    parser.add_argument("--out", type=Path, default=Path(out), help="runs and evaluations go here")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--limit", type=int, help="evaluate only the first N units")
    parser.add_argument("--data-dir", help="data dir (default: $TOOLTUNE_DATA or ../shared/data)")
    parser.add_argument("--results", type=Path, default=Path("bench/results/quality.md"))


def run_main(name: str, parser: argparse.ArgumentParser, run, argv: list[str] | None) -> int:
    """Parse `argv` and run `run(args)`; a ToolTuneError is printed as `NAME: error: ...` with exit status 2."""
    try:
        return run(parser.parse_args(argv))
    except ToolTuneError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2


def subset(text: str, known, what: str) -> list[str]:
    """The comma-separated names of `text`, each one of `known`."""
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ToolTuneError(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def demo_base(demo: Path) -> Path:
    """The base model folder of a finished demo base stage."""
    base = demo / "base"
    if not (base / "DONE").is_file():
        raise ToolTuneError(f"{base} is not a finished demo base stage: run `tooltune demo --out {demo}` first")
    return base / (base / "DONE").read_text(encoding="utf-8").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, "runs/quality")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--steps", type=int, default=DEFAULT.finetune_steps, help="optimizer steps for every method")
    parser.add_argument("--native", action="store_true", help="also evaluate the untrained base (the native row)")
    parser.add_argument("--section", default="", help="write the table between markers with this name, leaving the "
                        "main methods table alone (for a method measured later)")
    return run_main("quality", parser, _run, argv)


def _run(args: argparse.Namespace) -> int:
    from tooltune.demo import evaluate
    from tooltune.evaluate.report import read_metrics, render_table, table_rows
    from tooltune.train.methods import check_supported

    methods = subset(args.methods, METHODS, "methods")
    if "qlora" in methods:
        try:
            check_supported("qlora", gradient_checkpointing=False)
        except ToolTuneError as e:
            print(f"[qlora] skipped: {e}")
            methods.remove("qlora")
    model_dir = demo_base(args.demo)
    data_dir = paths.data_dir(args.data_dir)
    split_file = data_dir / paths.COURSE_SPLIT / f"{args.split}.chatglm3.jsonl"
    gpt2 = is_gpt2(model_dir)
    budget = with_budget(DEFAULT if gpt2 else PYPI, eval_limit=args.limit)
    dirs, seconds = [], {}
    if args.native:
        native = args.out / f"native-{args.split}"
        if not (native / "metrics.json").is_file():
            # Decoded like every trained row: with the demo's budget, the output vocabulary of the course train split.
            evaluate(model_dir, split_file, native, budget, args.data_dir, format="llama2", observation="compact",
                     train_file=data_dir / paths.COURSE_SPLIT / "train.chatglm3.jsonl")
            # The own GPT-2's folder is also its pre-training run: label the row as the lecture's native row.
            content = json.loads((native / "metrics.json").read_text(encoding="utf-8"))
            content.update(model=model_dir.name, method="native (untrained)")
            (native / "metrics.json").write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n",
                                                 encoding="utf-8")
        dirs.append(("native", native))
    for method in methods:
        run_dir = args.out / method
        train_timed(method, run_dir, partial(method_tree, method, model_dir, run_dir, data_dir, args.steps, gpt2))
        seconds[method] = float((run_dir / "bench_seconds.txt").read_text())
        eval_dir = args.out / f"{method}-{args.split}"
        if not (eval_dir / "metrics.json").is_file():
            evaluate(run_dir, split_file, eval_dir, budget, args.data_dir)
        dirs.append((method, eval_dir))
    runs = [read_metrics(d) for _, d in dirs]
    lines = table_rows(runs, extra=True)
    lines[0] += ["train s", "trainable params"]
    for (method, _), line in zip(dirs, lines[1:]):
        trained = rundir.read_info(args.out / method) if method in seconds else None
        line += [f"{seconds[method]:.0f}" if method in seconds else "-",
                 f"{trained.trainable_parameters or 0:,}" if trained else "-"]
    # The rows to beat: the lecture's (GPU, 6-7B models) and, where the demo made it, the rules baseline's.
    above = lecture_lines(len(lines[0]))
    if args.split == "test" and not args.limit and (args.demo / "rules" / "metrics.json").is_file():
        above.append(table_rows([read_metrics(args.demo / "rules")], extra=True)[1] + ["-", "-"])
    lines[1:1] = above
    limit = f", first {args.limit} units" if args.limit else ""
    begin, end = markers(args.section)
    section = "\n".join([begin, f"Command: `{command('quality.py', env='PYTHONPATH=src')}`  ",
                         (f"Hardware: {hardware()}. Split: {args.split}{limit}, turn mode. Same base "
                          f"({model_dir.name}), {args.steps} optimizer steps of 4 dialogues for every method."), "",
                         render_table(lines, markdown=True), end])
    print(section)
    _write_section(args.results, section, begin, end)
    return 0


def _write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section of `path` between the markers `begin` and `end` (appended when the file has none)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Quality\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())

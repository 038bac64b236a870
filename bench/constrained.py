"""Schema-constrained calls on the course test set's call units: valid-call rate, slot F1 and latency, off vs on.

    PYTHONPATH=src python bench/constrained.py RUN_OR_MODEL [--format llama2] [--limit 60] [--label TEXT]

RUN_OR_MODEL: a `tooltune train` run directory or a plain model directory (then --format). The call units (242 on
the course test set: gold is a call, gold history before it) are generated twice with the same greedy settings,
unconstrained and `--constrained`; `--limit N` takes N units spread evenly over the set. Appends a section to
bench/results/constrained.md (or --out) with the command, the model and the numbers.

Columns: *called*: the output opened a call (parsed as one, clean or not); *clean*: parsed without leftovers;
*valid*: clean and `argument_problems(tool, args) == []`; *valid-call rate* = valid / called; slot P/R/F1 as the
course computes them over all the units (a reply where a call was due counts as {}). Latency: wall time per
generated token and per unit, and the constraint's own time (opener watch, grammar steps, masks) per token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from tooltune.dialogue import MAX_NEW_TOKENS, Call
from tooltune.evaluate.run import EvalOptions, evaluate_run
from tooltune.evaluate.units import eval_units
from tooltune.datafiles import read_dialogues
from tooltune.paths import data_file
from tooltune.runs import load_for_inference
from tooltune.schema import argument_problems

from shown import command  # bench/ is the script's own folder

TEST = "hotel/v3_chatglm3_llama2/test.chatglm3.jsonl"


def spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spaced over `items` (all when limit is None or larger)."""
    if limit is None or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def measure(loaded, units, constrained: bool, args) -> dict:
    options = EvalOptions(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          max_prompt_tokens=args.max_prompt_tokens, constrained=constrained, task_success=False,
                          rouge=False, progress=True)
    result = evaluate_run(loaded, units, options)
    preds, gen, metrics = result.predictions, result.generator, result.metrics
    tokens = sum(p.new_tokens for p in preds)
    called = [p for p in preds if isinstance(p.parsed.turn, Call)]
    clean = [p for p in called if not p.parsed.malformed]
    valid = [p for p in clean if not argument_problems(units[0].tools[0], p.parsed.turn.arguments)]
    return {"called": len(called), "clean": len(clean), "valid": len(valid),
            "rate": 100.0 * len(valid) / len(called) if called else 0.0,
            "slot_p": metrics["slot_p"], "slot_r": metrics["slot_r"], "slot_f1": metrics["slot_f1"],
            "tokens": tokens, "ms_token": 1000 * result.seconds / max(1, tokens),
            "ms_unit": 1000 * result.seconds / len(units),
            "constraint_ms_token": 1000 * gen.constraint_seconds / max(1, tokens),
            "unconstrained_calls": gen.unconstrained_calls, "raw": [p.raw for p in preds]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--format", default=None)
    p.add_argument("--data", default=None, help=f"dialogues (default: the course's {TEST})")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--max-prompt-tokens", type=int, default=2048, help="longer histories lose their oldest turns")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--label", default="", help="what the model is, for the report")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "constrained.md"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_for_inference(args.run, format=args.format)
    dialogues = read_dialogues(args.data or data_file(TEST))
    units = spread([u for u in eval_units(dialogues) if isinstance(u.gold, Call)], args.limit)
    results = {flag: measure(loaded, units, flag, args) for flag in (False, True)}
    changed = sum(a != b for a, b in zip(results[False]["raw"], results[True]["raw"]))

    lines = [f"\n## {args.label or loaded.model_name} ({loaded.method}, format {loaded.format}), "
             f"{len(units)} call units\n",
             f"Command: `{command(Path(__file__).name, env='PYTHONPATH=src')}`  ",
             f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
             f"{next(loaded.model.parameters()).device}; greedy, max_new_tokens {args.max_new_tokens}, "
             f"max_prompt_tokens {args.max_prompt_tokens}, batch {args.batch_size}.\n",
             "| constrained | called | clean | valid | valid-call rate | SLOT-P | SLOT-R | SLOT-F1 | tokens | "
             "ms/token | ms/unit | constraint ms/token |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for flag, r in results.items():
        lines.append(f"| {'on' if flag else 'off'} | {r['called']} | {r['clean']} | {r['valid']} | {r['rate']:.1f} | "
                     f"{r['slot_p']:.2f} | {r['slot_r']:.2f} | {r['slot_f1']:.2f} | {r['tokens']} | "
                     f"{r['ms_token']:.1f} | {r['ms_unit']:.0f} | {r['constraint_ms_token']:.2f} |")
    lines.append(f"\nOutputs that differ between off and on: {changed} of {len(units)}; calls left unconstrained "
                 f"(opener token carried text the grammar refused): {results[True]['unconstrained_calls']}.")
    text = "\n".join(lines) + "\n"
    print(text)
    diffs = [(a, b) for a, b in zip(results[False]["raw"], results[True]["raw"]) if a != b]
    for a, b in diffs[:4]:  # a look at what the constraint changed (stdout only)
        print(f"off: {a[:160]!r}\non:  {b[:160]!r}\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

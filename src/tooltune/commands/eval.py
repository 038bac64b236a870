"""`tooltune eval RUN_OR_MODEL --data FILE --out DIR`: predictions.jsonl and metrics.json on a dialogue file."""

from __future__ import annotations

import argparse
from pathlib import Path

from tooltune.commands.chat import check_numbers
from tooltune.dialogue import MAX_NEW_TOKENS

# evaluate.run loads torch and transformers: imported inside `run`, so that `tooltune --help` stays fast.
HELP = "evaluate a run (or a base model) on a dialogue file: predictions.jsonl + metrics.json"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a tooltune run directory, or a Hugging Face model directory (then --format)")
    p.add_argument("--data", required=True, help="dialogues to evaluate on (any format tooltune reads)")
    p.add_argument("--out", required=True, help="directory for predictions.jsonl and metrics.json")
    p.add_argument("--mode", choices=("turn", "dialogue"), default="turn",
                   help="turn: gold history (the course's definition); dialogue: the model's own outputs fed back")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N units (turn) or dialogues")
    p.add_argument("--format", default=None, help="chat format (default: the run's)")
    p.add_argument("--observation", choices=("full", "compact"), default=None, help="default: the run's")
    p.add_argument("--split", default=None, help="name used in unit ids (default: the file's stem)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--dtype", default="auto",
                   help="float32, bfloat16, or auto (default): bfloat16 where bf16 is native (a GPU, a CPU with "
                        "AVX512-BF16 or AMX), else float32")
    p.add_argument("--constrained", action="store_true",
                   help="generate call arguments under the tool's schema (needs the 'constrained' extra)")
    p.add_argument("--copy", action="store_true",
                   help="with --constrained: each free string of a call (the hotel tool's name and facilities) is a "
                        "span of the user's own words or a facility or hotel name of the hotel database")
    p.add_argument("--db", default=None, help="the hotel database for --copy and task success (default: the cache's, "
                                              "built from the data dir on first use)")
    p.add_argument("--domain-vocab", action="store_true",
                   help="generate only tokens of the run's training data or of the prompt (its output layer then "
                        "computes those rows only: faster decoding with a large vocabulary; recorded in metrics.json)")
    p.add_argument("--samples", type=int, default=1,
                   help="above 1: the greedy turn plus SAMPLES-1 turns drawn at --temperature, answering with the one "
                        "that agrees most with the others (minimum Bayes risk: character BLEU-4 between replies, slot "
                        "F1 between calls; recorded in metrics.json)")
    p.add_argument("--temperature", type=float, default=None,
                   help="0: greedy (default); above 0: draw tokens at this temperature (default 0.7 with --samples)")
    p.add_argument("--top-p", type=float, default=1.0, help="when drawing: nucleus sampling's probability mass")
    p.add_argument("--top-k", type=int, default=0, help="when drawing: only the K most likely tokens (0: no cut)")
    p.add_argument("--seed", type=int, default=0, help="seeds each batch's draws (default 0: repeatable)")
    p.add_argument("--no-task-success", action="store_true", help="skip running calls on the hotel database")
    p.add_argument("--no-prefix-reuse", action="store_true",
                   help="read every unit's prompt in its own batch, as before (default: the turn units of a dialogue "
                        "take their prompt's KV cache from one read of its longest prompt; recorded in metrics.json)")
    p.add_argument("--no-continuous-batching", action="store_true",
                   help="greedy decoding in fixed batches, each until its longest unit ends (default: a unit that "
                        "ends leaves its batch and the next unit takes its place; recorded in metrics.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation of the same settings from the rows it wrote to "
                        "OUT/predictions.partial.jsonl (without it an evaluation starts afresh)")


def run(args: argparse.Namespace) -> int:
    from tooltune.evaluate.run import EvalOptions, evaluate_run

    check_numbers(args, ("limit", "batch_size", "max_new_tokens", "samples"))
    options = EvalOptions(mode=args.mode, limit=args.limit, split=args.split, format=args.format,
                          observation=args.observation, dtype=args.dtype, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, constrained=args.constrained, copy=args.copy,
                          db=args.db, domain_vocab=args.domain_vocab, samples=args.samples,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                          reuse_prefix=not args.no_prefix_reuse, continuous=not args.no_continuous_batching,
                          task_success=not args.no_task_success, out=args.out, resume=args.resume, progress=True)
    result = evaluate_run(args.run, args.data, options)
    m, meta = result.metrics, result.meta
    print(f"{meta['model']} {meta['method']}: BLEU-4 {m['bleu4']:.2f}  SLOT-P {m['slot_p']:.2f}  "
          f"SLOT-R {m['slot_r']:.2f}  SLOT-F1 {m['slot_f1']:.2f}  ({meta['units']} units, {result.seconds:.0f} s)")
    if meta["malformed_outputs"]:
        print(f"{meta['malformed_outputs']} outputs were malformed (a call that could not be read cleanly; scored as "
              f"read)")
    out = Path(args.out)
    print(f"wrote {out / 'predictions.jsonl'} and {out / 'metrics.json'}")
    return 0

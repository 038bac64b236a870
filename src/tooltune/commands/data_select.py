"""`tooltune data select --model RUN --pool FILE --n N --out FILE [--label-studio FILE]`."""

from __future__ import annotations

import argparse

from tooltune.curation import SCORES
from tooltune.curation.annotate import label_studio_task
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.errors import InputError
from tooltune.formats import get_format
from tooltune.jsonio import atomic_write_text

# Modules that load torch (curation.select, inference, runs) are imported inside the functions that use them: `tooltune
# --help` builds every subcommand's parser and should not pay for them.
HELP = "rank unlabelled or unchecked dialogues by the model's uncertainty and write the top N for annotation"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a tooltune run directory (or a model directory + --format)")
    parser.add_argument("--pool", required=True, help="dialogues to choose from (any format tooltune reads)")
    parser.add_argument("--n", type=int, required=True, help="how many to select")
    parser.add_argument("--out", required=True, help="the selected dialogues, seed JSONL, most uncertain first")
    parser.add_argument("--label-studio", metavar="FILE", default=None,
                        help="also write them as a Label Studio import (JSON tasks with `data` fields)")
    parser.add_argument("--scores", metavar="FILE", default=None, help="write every pool dialogue's scores (JSONL)")
    parser.add_argument("--by", choices=SCORES, default="mean",
                        help="mean/min: minus the mean/min token log-prob of the greedy calls; disagree: greedy vs "
                             "sampled decoding disagree; loss: the model's loss on the dialogue's own labelled "
                             "assistant turns, no decoding (for unchecked dialogues; fast) (default: mean)")
    parser.add_argument("--batch", default="batch-1", help="batch name written into the Label Studio tasks")
    parser.add_argument("--format", default=None, help="chat format (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled decoding")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=None,
                        help="--by loss: keep the last N tokens of a longer dialogue, as training does (default: all)")


def run(args: argparse.Namespace) -> int:
    import json

    from tooltune.curation.select import label_losses, select_top, uncertainties
    from tooltune.inference import Generator
    from tooltune.runs import load_for_inference

    if args.n < 1:
        raise InputError("must be at least 1", field="--n")
    if args.max_length is not None and args.max_length < 1:
        raise InputError("must be at least 1", field="--max-length")
    pool = read_dialogues(args.pool)
    if not pool:
        raise InputError("no dialogues", where=args.pool)
    if args.by == "loss" and not any(d.targets() for d in pool):
        raise InputError("--by loss scores the labelled assistant turns, and no dialogue has one", where=args.pool)
    loaded = load_for_inference(args.model, format=args.format)
    if args.by == "loss":
        scored = label_losses(loaded.model, loaded.tokenizer, get_format(loaded.format), pool, loaded.observation,
                              loaded.argument_order, args.max_length)
    else:
        generator = Generator(loaded.model, loaded.tokenizer, get_format(loaded.format),
                              config=loaded.generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
        scored = uncertainties(generator, pool, seed=args.seed)
    top = select_top(scored, args.n, args.by)
    write_dialogues([pool[u.index] for u in top], args.out, "seed")
    if args.by == "loss":
        unlabelled = sum(not pool[u.index].targets() for u in scored)
        print(f"scored {len(pool)} dialogues by the loss of their labelled turns ({unlabelled} without an assistant "
              f"turn score 0); wrote the {len(top)} most uncertain to {args.out}")
    else:
        no_point = sum(u.points == 0 for u in scored)
        print(f"scored {len(pool)} dialogues ({sum(u.points for u in scored)} decision points; {no_point} without "
              f"one score 0); wrote the {len(top)} most uncertain by {args.by} to {args.out}")
    if args.label_studio:
        tasks = [label_studio_task(k + 1, pool[u.index], args.batch, u.score(args.by)[0], "\n".join(u.greedy))
                 for k, u in enumerate(top)]
        atomic_write_text(args.label_studio, json.dumps(tasks, ensure_ascii=False, indent=1))
        print(f"wrote {len(tasks)} Label Studio tasks to {args.label_studio}")
    if args.scores:
        atomic_write_text(args.scores, "".join(
            json.dumps({"id": pool[u.index].id, "points": u.points, "mean": u.mean, "min": u.min,
                        "disagree": u.disagree, "loss": u.loss}, ensure_ascii=False) + "\n" for u in scored))
    return 0

"""`tooltune data select --model RUN --pool FILE --n N --out FILE [--label-studio FILE]`."""

from __future__ import annotations

import argparse

HELP = "rank unlabelled or unchecked dialogues by the model's uncertainty and write the top N for annotation"


def configure(parser: argparse.ArgumentParser) -> None:
    from tooltune.loop.select import SCORES

    parser.add_argument("--model", required=True, help="a tooltune run directory (or a model directory + --format)")
    parser.add_argument("--pool", required=True, help="dialogues to choose from (any format tooltune reads)")
    parser.add_argument("--n", type=int, required=True, help="how many to select")
    parser.add_argument("--out", required=True, help="the selected dialogues, seed JSONL, most uncertain first")
    parser.add_argument("--label-studio", metavar="FILE", default=None,
                        help="also write them as a Label Studio import (JSON tasks with `data` fields)")
    parser.add_argument("--scores", metavar="FILE", default=None, help="write every pool dialogue's scores (JSONL)")
    parser.add_argument("--by", choices=SCORES, default="mean",
                        help="mean/min: minus the mean/min token log-prob of the greedy calls; disagree: greedy vs "
                             "sampled decoding disagree (default: mean)")
    parser.add_argument("--batch", default="batch-1", help="batch name written into the Label Studio tasks")
    parser.add_argument("--format", default=None, help="chat format (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled decoding")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tooltune.errors import InputError
    from tooltune.files import read_dialogues, write_dialogues
    from tooltune.formats import get_format
    from tooltune.inference import Generator
    from tooltune.loop.annotate import label_studio_task
    from tooltune.loop.select import select_top, uncertainties
    from tooltune.runs import load_for_inference

    if args.n < 1:
        raise InputError("must be at least 1", field="--n")
    pool = read_dialogues(args.pool)
    if not pool:
        raise InputError("no dialogues", where=args.pool)
    loaded = load_for_inference(args.model, format=args.format)
    generator = Generator(loaded.model, loaded.tokenizer, get_format(loaded.format),
                          config=loaded.generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    scored = uncertainties(generator, pool, seed=args.seed)
    top = select_top(scored, args.n, args.by)
    no_point = sum(u.points == 0 for u in scored)
    write_dialogues([pool[u.index] for u in top], args.out, "seed")
    print(f"scored {len(pool)} dialogues ({sum(u.points for u in scored)} decision points; {no_point} without one "
          f"score 0); wrote the {len(top)} most uncertain by {args.by} to {args.out}")
    if args.label_studio:
        tasks = [label_studio_task(k + 1, pool[u.index], args.batch, u.score(args.by)[0], "\n".join(u.greedy))
                 for k, u in enumerate(top)]
        Path(args.label_studio).write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"wrote {len(tasks)} Label Studio tasks to {args.label_studio}")
    if args.scores:
        with open(args.scores, "w", encoding="utf-8") as f:
            for u in scored:
                f.write(json.dumps({"id": pool[u.index].id, "points": u.points, "mean": u.mean, "min": u.min,
                                    "disagree": u.disagree}, ensure_ascii=False) + "\n")
    return 0

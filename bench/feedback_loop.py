"""The feedback loop measured (lecture 12.2, issue #27): simulated users correct a served model's calls, the
corrections are exported by `tooltune data feedback export` and trained on, and dev is scored before and after.

    python bench/feedback_loop.py --run demo/run [--share 0.5] [--steps 150] [--replay 200] [--dev-limit 0]
    python bench/feedback_loop.py --model tiny      # a smoke check of the whole loop on a tiny model (minutes)

1. The served model: `--run`, a tooltune run directory (the demo's is `demo/run`); with `--model tiny`, a tiny Llama
   trained here for `--base-steps` steps on 200 course train dialogues (it shows that the loop runs, not what it gains).
2. The course dev split is cut in two halves by dialogue (seeded); a dialogue of the second half that shares a user
   sentence with the first is dropped from it (the rule of `data build --exclude`). Users talk to the model on the
   first half ("feedback half"); the second ("held-out half") is what is scored.
3. Simulated users, turn mode: for a share `--share` of the feedback half's call turns (seeded draw), the model
   answers the gold history, the answer is recorded in a feedback store as the server records a completion, and a
   scripted user checks it against the gold call: a wrong call (a slot differs, or a reply where a search was due)
   gets the gold arguments as its correction and a thumbs-down, a right one a thumbs-up. A gold call the store
   refuses (arguments outside the tool's schema) is rated bad without a correction, and counted.
4. `tooltune data feedback export` turns the store into a training file: the corrected and confirmed calls with the
   gold history before them.
5. Training from the served model (merged: `tooltune export --merge`), `--steps` steps each: "+feedback" on the export
   plus `--replay` course train dialogues (so that it does not forget the rest), and the control on the replay
   dialogues alone. What "+feedback" gains over the control is the corrections', not the extra steps'.
6. The held-out half in turn mode (slot F1, BLEU-4, as `tooltune eval` scores them): served model, +feedback, control.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from active_learning import dev_metrics, tiny_model  # noqa: E402  (bench/ is the script's folder)
from quality import hardware  # noqa: E402

from tooltune.dialogue import Call, Dialogue, dialogue_to_seed  # noqa: E402
from tooltune.datafiles import read_dialogues, write_dialogues  # noqa: E402
from tooltune.paths import data_dir  # noqa: E402

from shown import command  # noqa: E402  (bench/ is the script's own folder)


def split_dev(dev: list[Dialogue], seed: int) -> tuple[list[Dialogue], list[Dialogue], int]:
    """(feedback half, held-out half, dialogues dropped from the held-out half for sharing a user sentence)."""
    from tooltune.dataset.exclude import item_texts, remove_overlap
    from tooltune.dataset.items import Item

    order = list(range(len(dev)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    feedback = [dev[i] for i in sorted(order[:half])]
    held = [Item(dev[i], "dev", str(i)) for i in sorted(order[half:])]
    texts = item_texts(Item(d, "dev", str(k)) for k, d in enumerate(feedback))
    kept, removed = remove_overlap(held, texts)
    return feedback, [item.dialogue for item in kept], len(removed)


def right_call(pred, gold: Call) -> bool:
    from tooltune.evaluate.metrics import slot_counts

    if not isinstance(pred, Call) or pred.name != gold.name:
        return False
    c = slot_counts(pred.arguments, gold.arguments)
    return c.correct == c.predicted == c.gold


def simulate_users(run: Path, feedback: list[Dialogue], share: float, seed: int, store_path: Path, args
                   ) -> dict[str, int]:
    """Step 3: the model answers a share of the feedback half's call turns; the scripted user rates or corrects."""
    from tooltune.errors import InputError
    from tooltune.evaluate.run import EvalOptions, evaluate_run
    from tooltune.evaluate.units import eval_units
    from tooltune.feedback import Correction, FeedbackStore

    every = [u for u in eval_units(feedback, split="feedback") if isinstance(u.gold, Call)]
    chosen = sorted(random.Random(seed).sample(range(len(every)), round(share * len(every))))
    units = [every[i] for i in chosen]
    options = EvalOptions(dtype=args.dtype, batch_size=args.gen_batch, max_new_tokens=args.max_new_tokens,
                          task_success=False, rouge=False)
    rows = evaluate_run(run, units, options).rows if units else []
    store = FeedbackStore(store_path)
    counts = {"call turns in the feedback half": len(every), "reviewed": len(units), "right (thumbs-up)": 0,
              "wrong (corrected)": 0, "gold refused by the store (thumbs-down only)": 0}
    try:
        for k, (unit, row) in enumerate(zip(units, rows)):
            cid = f"sim-{k}"
            store.record(cid, unit.history, [row.pred], str(run), "api", unit.tools)
            if right_call(row.pred, unit.gold):
                store.rate(cid, rating="good")
                counts["right (thumbs-up)"] += 1
                continue
            try:
                store.rate(cid, rating="bad", correction=Correction(arguments=dict(unit.gold.arguments)))
                counts["wrong (corrected)"] += 1
            except InputError:
                store.rate(cid, rating="bad")
                counts["gold refused by the store (thumbs-down only)"] += 1
    finally:
        store.close()
    return counts


def start_config(args):
    """The config new training starts from: the served run's (format, observation, method) or the tiny one's."""
    from tooltune.rundir import read_config
    from tooltune.train.config import config_from_dict

    if args.run:
        return read_config(Path(args.run))
    return config_from_dict({"model": {"dtype": "float32"}, "method": {"name": "full"},
                             "data": {"format": "chatglm3", "observation": "compact", "max_length": 1024},
                             "train": {"lr": 3e-3, "batch_size": 8, "mixed_precision": "no"}})


def train(start, model: Path, data: list[Dialogue], out: Path, steps: int, args) -> Path:
    from tooltune.train.config import replace
    from tooltune.train.recipe import fine_tune

    out.mkdir(parents=True, exist_ok=True)
    write_dialogues(data, out / "train.jsonl", "seed")
    cfg = replace(start, model={"path": str(model), "tokenizer": ""},
                  method={"name": args.method or start.method.name},
                  data={"train": str(out / "train.jsonl"), "dev": ""},
                  train={"out": str(out / "run"), "max_steps": steps, "grad_accum": 1, "seed": args.seed,
                         "warmup_steps": steps // 10, "eval_every": 0, "save_every": 0, "early_stopping": 0,
                         "log_every": 10, "max_minutes": 0.0, **({"lr": args.lr} if args.lr else {}),
                         **({"batch_size": args.batch_size} if args.batch_size else {})})
    fine_tune(cfg)
    return out / "run"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="the served model: a tooltune run directory (e.g. demo/run)")
    p.add_argument("--model", choices=("tiny",), help="tiny: a tiny Llama trained here stands in (smoke check)")
    p.add_argument("--share", type=float, default=0.5, help="share of the feedback half's call turns users review")
    p.add_argument("--steps", type=int, default=150, help="training steps after the feedback, each arm")
    p.add_argument("--replay", type=int, default=200, help="course train dialogues mixed in (and the control's data)")
    p.add_argument("--base-steps", type=int, default=30, help="--model tiny: steps that train the served tiny model")
    p.add_argument("--method", default=None, help="method of the new training (default: the served run's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the served run's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the served run's)")
    p.add_argument("--dev-limit", type=int, default=0, help="score the first N held-out turn units (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype for generation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/tooltune-feedback-loop")
    p.add_argument("--out", default=None, help="results (markdown; default bench/results/feedback_loop.md, or the "
                                               "work folder with --model tiny)")
    args = p.parse_args()
    if bool(args.run) == bool(args.model):
        p.error("give --run RUN (the served model) or --model tiny")
    if args.model == "tiny":  # a smoke check: small numbers unless given
        args.steps = args.steps if "--steps" in sys.argv else 5
        args.replay = args.replay if "--replay" in sys.argv else 20
        args.dev_limit = args.dev_limit or 20
        args.max_new_tokens = min(args.max_new_tokens, 32)
    if not 0 < args.share <= 1:
        p.error("--share must be in (0, 1]")

    from tooltune.cli import main as tooltune
    from tooltune.train.export import merge

    started, timings = time.time(), {}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    split = data_dir() / "hotel" / "v3_chatglm3_llama2"
    train_all = read_dialogues(split / "train.chatglm3.jsonl")
    dev = read_dialogues(split / "dev.chatglm3.jsonl")
    feedback_half, held_out, dropped = split_dev(dev, args.seed)
    if args.model == "tiny":
        feedback_half = feedback_half[:40]
    rng = random.Random(args.seed)
    start = start_config(args)

    clock = time.time()
    if args.run:
        served = Path(args.run)
    else:
        texts = [json.dumps(dialogue_to_seed(d), ensure_ascii=False) for d in train_all[:800]]
        served = train(start, tiny_model(work / "tiny", texts), rng.sample(train_all, 200), work / "served",
                       args.base_steps, args)
    timings["served model"] = time.time() - clock

    clock = time.time()
    store = work / "feedback.sqlite"
    store.unlink(missing_ok=True)
    users = simulate_users(served, feedback_half, args.share, args.seed, store, args)
    timings["simulated users (generation)"] = time.time() - clock
    exported = work / "feedback.jsonl"
    assert tooltune(["data", "feedback", "export", "--db", str(store), "--out", str(exported)]) == 0
    corrections = read_dialogues(exported) if exported.stat().st_size else []

    clock = time.time()
    merged = work / "merged"
    merge(served, merged)
    replay = rng.sample(train_all, args.replay)
    runs = {"+feedback": train(start, merged, corrections + replay, work / "feedback-run", args.steps, args),
            "control (replay only)": train(start, merged, replay, work / "control-run", args.steps, args)}
    timings["training both arms"] = time.time() - clock

    rows = {}
    for name, run in (("served model", served), *runs.items()):
        clock = time.time()
        rows[name] = dev_metrics(run, held_out, args.dev_limit, args.max_new_tokens, None, args.dtype, args.gen_batch)
        timings[f"scoring {name}"] = time.time() - clock
        print(name, rows[name], flush=True)
    out = Path(args.out) if args.out else (work / "feedback_loop.md" if args.model else
                                           Path("bench/results/feedback_loop.md"))
    write_results(out, args, users, len(corrections), len(feedback_half), len(held_out), dropped, rows,
                  time.time() - started, timings)


def write_results(out: Path, args, users: dict, exported: int, n_feedback: int, n_held: int, dropped: int,
                  rows: dict, seconds: float, timings: dict) -> None:
    cmd = command("feedback_loop.py")
    served = args.run or "a tiny Llama trained here (smoke check: says the loop runs, not what it gains)"
    lines = ["# The feedback loop: users' corrections trained on", "",
             f"Command: `{cmd}` ({seconds / 60:.0f} min; {hardware()}).", "",
             f"Served model: {served}. Dev split: {n_feedback} dialogues where users give feedback, {n_held} held out "
             f"({dropped} more dropped for sharing a user sentence with the feedback half). Users reviewed a share "
             f"{args.share:g} of the feedback half's call turns: " + ", ".join(f"{k} {v}" for k, v in users.items())
             + f". Exported dialogues: {exported}. Each arm: {args.steps} steps from the served model merged, with "
             f"{args.replay} replayed course train dialogues; held-out scoring in turn mode"
             f"{', first ' + str(args.dev_limit) + ' units' if args.dev_limit else ''}.", "",
             "| model | slot F1 | BLEU-4 | slot P | slot R | calls | replies |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['slot_f1']:.2f} | {m['bleu4']:.2f} | {m['slot_p']:.2f} | {m['slot_r']:.2f} | "
                     f"{m['n_calls']} | {m['n_replies']} |")
    lines += ["", "Times (seconds): " + "; ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

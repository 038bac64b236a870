"""`tooltune eval RUN_OR_MODEL --data FILE --out DIR`: predictions.jsonl and metrics.json on a dialogue file."""

from __future__ import annotations

import argparse
import time

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
    p.add_argument("--max-new-tokens", type=int, default=256)
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
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation of the same settings from the rows it wrote to "
                        "OUT/predictions.partial.jsonl (without it an evaluation starts afresh)")

# The options that decide the predictions: a resumed evaluation must be given the same ones.
SETTINGS = ("run", "data", "mode", "limit", "format", "observation", "split", "batch_size", "max_new_tokens", "dtype",
            "constrained", "copy", "db", "domain_vocab", "samples", "temperature", "top_p", "top_k", "seed")


def decoding(args: argparse.Namespace) -> dict:
    """How tokens were chosen, for metrics.json."""
    if args.samples > 1:
        return {"kind": "minimum Bayes risk", "samples": args.samples, "temperature": args.temperature,
                "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed}
    if args.temperature > 0:
        return {"kind": "sampled", "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                "seed": args.seed}
    return {"kind": "greedy"}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tooltune.errors import ToolTuneError
    from tooltune.evaluate.predictions import Row, write_predictions
    from tooltune.evaluate.report import write_metrics
    from tooltune.evaluate.score import hoteldb_search
    from tooltune.evaluate.partial import PartialPredictions
    from tooltune.evaluate.units import Prediction, eval_units, predict_dialogue, unit_id
    from tooltune.files import read_dialogues
    from tooltune.formats import get_format
    from tooltune.inference import GenerationConfig, Generator, domain_vocab
    from tooltune.runs import load_for_inference, training_data

    from tooltune.commands.chat import check_numbers

    check_numbers(args, ("limit", "batch_size", "max_new_tokens", "samples"))
    if args.temperature is None:
        args.temperature = 0.7 if args.samples > 1 else 0.0
    # Settings that cannot go together are refused before any slow loading.
    GenerationConfig(samples=args.samples, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    if args.copy and not args.constrained:
        raise ToolTuneError("--copy works through constrained decoding: add --constrained")
    copy_values = None
    if args.copy:
        from tooltune.db import HotelDB
        copy_values = HotelDB.open(args.db).known_values()
    train_file = training_data(args.run) if args.domain_vocab else None  # before any (slow) loading
    dialogues = read_dialogues(args.data)
    split = args.split or Path(args.data).name.split(".")[0]
    loaded = load_for_inference(args.run, format=args.format, observation=args.observation, dtype=args.dtype)
    fmt = get_format(loaded.format)
    vocab = None
    if train_file is not None:
        vocab = domain_vocab(read_dialogues(train_file), loaded.tokenizer, fmt, loaded.observation, loaded.argument_order)
        print(f"output vocabulary: {len(vocab):,} token ids of {train_file}, plus each prompt's own")
    generator = Generator(loaded.model, loaded.tokenizer, fmt,
                          config=loaded.generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                                   constrained=args.constrained, copy_values=copy_values,
                                                   output_vocab=vocab, samples=args.samples,
                                                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                                   seed=args.seed, reuse_prefix=not args.no_prefix_reuse))
    out = Path(args.out)
    partial = PartialPredictions(out, {key: getattr(args, key) for key in SETTINGS})
    if args.mode == "turn":
        units = eval_units(dialogues, split=split)[:args.limit]
        golds = {u.id: u.gold for u in units}
    else:
        dialogues = dialogues[:args.limit]
        golds = {unit_id(split, i, t): d.turns[t] for i, d in enumerate(dialogues) for t in d.targets()}
    done: dict = {}
    if args.resume:
        done, cut = partial.resume(golds)
        print(f"resuming: {len(done)} of {len(golds)} units already predicted in {partial.path}"
              + (f" ({cut} line cut short by the interruption dropped; redone)" if cut else ""))
    elif partial.path.exists():
        print(f"note: {partial.path} holds an interrupted evaluation; starting afresh (--resume continues it)")
    partial.open(done.values())
    started = time.perf_counter()
    try:
        if args.mode == "turn":
            def write_batch(batch, preds):
                partial.append([Row(units[i].id, units[i].gold, p.parsed.turn, p.raw) for i, p in zip(batch, preds)])

            preds = generator.predict([u.history for u in units], [u.tools for u in units], progress=True,
                                      skip={i for i, u in enumerate(units) if u.id in done}, on_batch=write_batch)
            rows = [done[u.id] if p is None else Row(u.id, u.gold, p.parsed.turn, p.raw) for u, p in zip(units, preds)]
        else:
            def generate(history, tools):
                p = generator.predict([history], [tools])[0]
                return Prediction(p.parsed.turn, p.raw)

            rows = []
            for i, dialogue in enumerate(dialogues):
                ids = [unit_id(split, i, t) for t in dialogue.targets()]
                if all(id_ in done for id_ in ids):
                    rows += [done[id_] for id_ in ids]
                    continue
                new = predict_dialogue(dialogue, generate, split=split, dialogue_index=i)
                partial.append(new)
                rows += new
    finally:
        partial.close(finished=False)
    seconds = time.perf_counter() - started
    write_predictions(out / "predictions.jsonl", rows)
    malformed = sum(fmt.parse(r.raw).malformed for r in rows)
    meta = {"model": loaded.model_name, "method": loaded.method, "mode": args.mode, "run": str(args.run),
            "data": str(args.data), "format": loaded.format, "observation": loaded.observation,
            "argument_order": loaded.argument_order,
            "generation_seconds": round(seconds, 1), "units": len(rows),
            "prompts_cut_inside_a_segment": generator.prompts_cut_inside, "constrained": args.constrained,
            "copy": args.copy, "decoding": {**decoding(args), "prefix_reuse": not args.no_prefix_reuse},
            "output_vocab": f"{len(vocab)} ids of {train_file} + the prompt's" if vocab is not None else "all",
            "malformed_outputs": malformed, "resumed_units": len(done),
            "invalid_characters_replaced": generator.replaced_characters}
    search = None if args.no_task_success else hoteldb_search(args.db)
    content = write_metrics(out, rows, meta, search=search)
    m = content["metrics"]
    print(f"{loaded.model_name} {loaded.method}: BLEU-4 {m['bleu4']:.2f}  SLOT-P {m['slot_p']:.2f}  "
          f"SLOT-R {m['slot_r']:.2f}  SLOT-F1 {m['slot_f1']:.2f}  ({len(rows)} units, {seconds:.0f} s)")
    partial.close(finished=True)
    if malformed:
        print(f"{malformed} outputs were malformed (a call that could not be read cleanly; scored as read)")
    print(f"wrote {out / 'predictions.jsonl'} and {out / 'metrics.json'}")
    return 0

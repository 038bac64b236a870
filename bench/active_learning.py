"""Active selection vs random selection of extra training dialogues (lecture 12.2), on the course's unused pool.

    python bench/active_learning.py [--base 200] [--add 200] [--pool-limit 0] [--seeds 0 1 2] [--steps 400]
                                    [--dev-limit 0] [--model DIR] [--out bench/results/loop.md]

The pool: the raw dialogues `raw/split_map.json` marks "unused" (never in any split), minus exact duplicates of dev
or test dialogues (same turns), repeats within the pool, and, as `data build --exclude` holds data out, every
dialogue with a user sentence of dev or test (augmented variants of held-out dialogues); what was removed is counted
in the output. The base set:
`--base` dialogues drawn (per seed) from the course train split. Per seed: train on the base set, rank the pool with
`tooltune.curation.select` (by `--by`, default mean token log-prob of the calls; `loss`, the model's loss on each
dialogue's own labelled turns, scored the whole pool of 1370 in 17 minutes with Gemma-3-270M on 2 CPU cores), then
train base + the `--add` most uncertain and base + `--add` drawn at random, and score all three on the first
`--dev-limit` turn units of dev (turn mode: slot P/R/F1 and BLEU-4 as `tooltune eval` computes them). Same config,
same steps for every run.

Without `--model` the base model is a tiny Llama (random init, a byte-level BPE tokenizer trained here on the
training text) trained by full fine-tuning: a CPU-sized stand-in that says whether the loop runs and in which
direction the numbers move, not what a real model gains. The run at the issue's scale (Gemma-3-270M, LoRA,
200 + 200, three seeds) is in bench/results/loop_active_full.md; `bench/gpu_active.sh` runs it on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from quality import hardware  # noqa: E402  (bench/ is the script's own folder)

from tooltune.dialogue import Dialogue, dialogue_to_seed  # noqa: E402
from tooltune.datafiles import read_dialogues, write_dialogues  # noqa: E402
from tooltune.paths import data_dir  # noqa: E402

from shown import command  # noqa: E402  (bench/ is the script's own folder)


def signature(d: Dialogue) -> str:
    """What makes two dialogues the same for de-duplication (as `split_map.json` matched them): the assistant
    texts and the call arguments with numbers normalised (400 == 400.0); record fields may differ in form."""
    def norm(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    parts = [t.get("content") if t["role"] == "assistant" else {k: norm(v) for k, v in t["arguments"].items()}
             for t in dialogue_to_seed(d) if t["role"] in ("assistant", "search")]
    return json.dumps(parts, ensure_ascii=False, sort_keys=True)


def unused_pool(root: Path) -> tuple[list[Dialogue], dict[str, int]]:
    """The "unused" raw dialogues, de-duplicated against dev and test and among themselves, then held out from dev
    and test by their user sentences (`dataset.exclude.remove_overlap`, the rule of `data build --exclude`); with the
    counts."""
    from tooltune.dataset.exclude import remove_overlap, user_texts
    from tooltune.dataset.items import Item

    split = root / "hotel" / "v3_chatglm3_llama2"
    raw = root / "hotel" / "raw"
    held_out = {signature(d) for name in ("dev", "test") for d in read_dialogues(split / f"{name}.chatglm3.jsonl")}
    names = sorted(f for f, s in json.loads((raw / "split_map.json").read_text(encoding="utf-8"))["map"].items()
                   if s == "unused")
    pool, seen, counts = [], set(), {"unused files": len(names), "same as dev/test": 0, "repeated in pool": 0}
    for name in names:
        for d in read_dialogues(raw / "enhanced_hotel_data" / name, "seed"):
            sig = signature(d)
            if sig in held_out:
                counts["same as dev/test"] += 1
            elif sig in seen:
                counts["repeated in pool"] += 1
            else:
                seen.add(sig)
                pool.append(d)
    held_out_users = user_texts([split / "dev.chatglm3.jsonl", split / "test.chatglm3.jsonl"])
    kept, removed = remove_overlap([Item(d, "unused", str(i)) for i, d in enumerate(pool)], held_out_users)
    counts["sharing a user sentence with dev/test"] = len(removed)
    pool = [item.dialogue for item in kept]
    counts["pool"] = len(pool)
    return pool, counts


def tiny_model(directory: Path, texts: list[str], vocab: int = 1500, hidden: int = 96) -> Path:
    """A tiny Llama and a tokenizer trained on `texts`, saved as a Hugging Face model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tooltune.train.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer(texts, vocab_size=vocab)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def train(args, model: Path, data: list[Dialogue], out: Path, seed: int, dev_file: Path) -> tuple[Path, float]:
    from tooltune.train.config import config_from_dict, config_to_dict, load_config
    from tooltune.train.recipe import fine_tune

    out.mkdir(parents=True, exist_ok=True)
    write_dialogues(data, out / "train.jsonl", "seed")
    start = config_to_dict(load_config(args.config)) if args.config else {
        "model": {}, "method": {}, "data": {"format": "chatglm3", "observation": "compact"}, "train": {}}
    cfg = config_from_dict({
        **start,
        "model": {**start["model"], "path": str(model), **({"dtype": args.dtype} if args.dtype else {})},
        "method": {**start["method"], "name": args.method},
        "data": {**start["data"], "train": str(out / "train.jsonl"), "dev": str(dev_file), "max_length": args.max_length},
        "train": {**start["train"], "out": str(out / "run"), "max_steps": args.steps, "batch_size": args.batch_size,
                  "grad_accum": 1, "lr": args.lr, "warmup_steps": args.steps // 10, "seed": seed, "log_every": 50,
                  "eval_every": 0, "save_every": 0, "compile": args.compile}})
    return out / "run", fine_tune(cfg).best_dev_loss


def generator_for(run: Path, max_new_tokens: int, dtype: str = "float32", batch_size: int = 16):
    """The run's generator, for ranking the pool by uncertainty (scoring goes through `evaluate_run`)."""
    from tooltune.formats import get_format
    from tooltune.inference import Generator
    from tooltune.runs import load_for_inference

    loaded = load_for_inference(run, dtype=dtype)
    return Generator(loaded.model, loaded.tokenizer, get_format(loaded.format),
                     config=loaded.generation(max_new_tokens=max_new_tokens, batch_size=batch_size))


def pool_losses(run: Path, pool: list[Dialogue], max_length: int, dtype: str = "float32"):
    """`--by loss`: the base run's loss on each pool dialogue's own labelled turns (no decoding)."""
    from tooltune.formats import get_format
    from tooltune.curation.select import label_losses
    from tooltune.runs import load_for_inference

    loaded = load_for_inference(run, dtype=dtype)
    return label_losses(loaded.model, loaded.tokenizer, get_format(loaded.format), pool, loaded.observation,
                        loaded.argument_order, max_length)


def dev_metrics(run: Path, dev: list[Dialogue], limit: int, max_new_tokens: int,
                vocab_of: list[Dialogue] | None = None, dtype: str = "float32", batch_size: int = 16
                ) -> dict[str, float]:
    """Course metrics of `run` on the first `limit` (0: all) dev turn units; with `vocab_of`, generating only the
    tokens of those dialogues and the prompt."""
    from tooltune.evaluate.run import EvalOptions, evaluate_run

    options = EvalOptions(limit=limit, split="dev", dtype=dtype, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          domain_vocab=bool(vocab_of), vocab_data=vocab_of, task_success=False, rouge=False)
    m = evaluate_run(run, dev, options).metrics
    return {k: m[k] for k in ("slot_f1", "bleu4", "slot_p", "slot_r", "n_calls", "n_replies")}


def _unit_ids(dev: list[Dialogue], limit: int) -> list[str]:
    from tooltune.evaluate.units import eval_units
    ids = [u.id for u in eval_units(dev, split="dev")]
    return ids[:limit] if limit else ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=int, default=200)
    p.add_argument("--add", type=int, default=200)
    p.add_argument("--pool-limit", type=int, default=0, help="score only this many pool dialogues (0: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--method", default="full")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--dev-limit", type=int, default=0, help="score the first N dev turn units (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gen-batch", type=int, default=16,
                   help="dev units decoded together (left-padded); larger is faster on a GPU")
    p.add_argument("--by", default="mean", choices=("mean", "min", "disagree", "loss"))
    p.add_argument("--domain-vocab", action="store_true",
                   help="generate dev answers only from the tokens of the course train split + the pool + the prompt "
                        "(the same for every run; ~2x faster with Gemma's 262k vocabulary)")
    p.add_argument("--model", default=None, help="a base model directory (default: a tiny Llama built here)")
    p.add_argument("--config", default=None,
                   help="a run config to start from (e.g. configs/demo.yaml: format, observation, LoRA rank and "
                        "targets); the options above override its method name, steps, batch, lr and paths")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="model dtype for training, pool scoring and dev generation (default: the config's for "
                        "training, float32 for the rest); bfloat16 only where bf16 is native (a GPU, AVX512-BF16/AMX)")
    p.add_argument("--compile", action="store_true", help="train.compile=true (decoder blocks compiled)")
    p.add_argument("--work", default="/tmp/tooltune-active-learning")
    p.add_argument("--out", default="bench/results/loop.md")
    args = p.parse_args()

    from tooltune.curation.select import select_top, uncertainties

    started = time.time()
    root = data_dir()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    split = root / "hotel" / "v3_chatglm3_llama2"
    train_all = read_dialogues(split / "train.chatglm3.jsonl")
    dev = read_dialogues(split / "dev.chatglm3.jsonl")
    pool_all, counts = unused_pool(root)
    print("pool:", counts, flush=True)
    model = Path(args.model) if args.model else tiny_model(
        work / "tiny", [json.dumps(dialogue_to_seed(d), ensure_ascii=False) for d in train_all[:800] + pool_all[:400]])
    dev_file = work / "dev.jsonl"  # the dev loss is measured on the dialogues the dev units come from
    dev_units_dialogues = dev[:len({u.split(":")[1] for u in _unit_ids(dev, args.dev_limit)})]
    write_dialogues(dev_units_dialogues, dev_file, "seed")
    vocab_of = train_all + pool_all if args.domain_vocab else None
    rows, timings = [], {}
    for seed in args.seeds:
        rng = random.Random(seed)
        base = rng.sample(train_all, args.base)
        pool = rng.sample(pool_all, args.pool_limit) if args.pool_limit else pool_all
        clock = time.time()
        base_run, base_loss = train(args, model, base, work / f"s{seed}-base", seed, dev_file)
        timings[f"seed {seed}: base run"] = time.time() - clock
        clock = time.time()
        dtype = args.dtype or "float32"
        scored = pool_losses(base_run, pool, args.max_length, dtype) if args.by == "loss" else \
            uncertainties(generator_for(base_run, args.max_new_tokens, dtype=dtype, batch_size=args.gen_batch), pool,
                          seed=seed)
        timings[f"seed {seed}: scoring {len(pool)} pool dialogues"] = time.time() - clock
        active = [pool[u.index] for u in select_top(scored, args.add, args.by)]
        chosen = {"base": base, "+active": base + active, "+random": base + rng.sample(pool, args.add)}
        for name, data in chosen.items():
            clock = time.time()
            run, loss = (base_run, base_loss) if name == "base" else \
                train(args, model, data, work / f"s{seed}-{name[1:]}", seed, dev_file)
            if name != "base":
                timings[f"seed {seed}: {name} run"] = time.time() - clock
            clock = time.time()
            m = dev_metrics(run, dev, args.dev_limit, args.max_new_tokens, vocab_of, dtype, args.gen_batch)
            timings[f"seed {seed}: {name} dev scoring"] = time.time() - clock
            rows.append({"seed": seed, "set": name, "train": len(data), "dev_loss": loss, **m})
            print(rows[-1], flush=True)
        write_results(args, counts, rows, time.time() - started, timings)  # after every seed: a stopped run keeps it


def write_results(args, counts: dict, rows: list[dict], seconds: float, timings: dict[str, float]) -> None:
    cmd = command("active_learning.py")
    lines = ["# Data loop: active vs random selection of extra training dialogues", "",
             f"Command: `{cmd}` ({seconds / 60:.0f} min; {hardware()}).", "",
             "Pool (raw `unused` dialogues): " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".", "",
             f"Model: {args.model or 'tiny Llama (2 layers, random init, tokenizer trained here), full fine-tuning'}"
             f"{', config ' + args.config if args.config else ''}, method {args.method}; "
             f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, dtype {args.dtype or 'as configured'}; dev: "
             f"{'first ' + str(args.dev_limit) + ' turn units' if args.dev_limit else 'all turn units'}; "
             f"selection by `{args.by}`.", "",
             "| seed | set | train dialogues | dev loss | slot F1 | BLEU-4 | slot P | slot R |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['set']} | {r['train']} | {r['dev_loss']:.4f} | {r['slot_f1']:.2f} | "
                     f"{r['bleu4']:.2f} | {r['slot_p']:.2f} | {r['slot_r']:.2f} |")
    lines += ["", "| set | dev loss mean +- std | slot F1 mean +- std | BLEU-4 mean +- std |",
              "| --- | ---: | ---: | ---: |"]
    for name in ("base", "+active", "+random"):
        f1 = [r["slot_f1"] for r in rows if r["set"] == name]
        bleu = [r["bleu4"] for r in rows if r["set"] == name]
        loss = [r["dev_loss"] for r in rows if r["set"] == name]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        lines.append(f"| {name} | {statistics.mean(loss):.4f} +- {sd(loss):.4f} | "
                     f"{statistics.mean(f1):.2f} +- {sd(f1):.2f} | "
                     f"{statistics.mean(bleu):.2f} +- {sd(bleu):.2f} |")
    lines += ["", "Times (seconds): " + "; ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

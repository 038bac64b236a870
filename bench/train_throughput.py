"""Training throughput: tooltune's loop vs Hugging Face Trainer + PEFT, same model, data, hardware, in one run.

    python bench/train_throughput.py [--model DIR] [--steps 12] [--repeats 3] [--out bench/results/train.md]

Without --model it builds a Gemma-3-shaped small model with Gemma's 262,144-entry vocabulary (the LM head and its
cross-entropy dominate, as they do for real Gemma fine-tuning on dialogues where ~13% of tokens are trained) and
synthetic examples with the course data's shape: median ~460 tokens, ~13% trained targets. Both sides train LoRA
(q_proj, v_proj) with the same batch size and number of optimizer steps; HF uses the default padding collator
(DataCollatorForSeq2Seq) and computes the full logits, tooltune groups by length and computes the head only at
trained positions. Repeats alternate the sides. Tokens/s counts non-padding tokens; `--skip N` leaves each run's first
N optimizer steps out of the timing on every side (kernel selection, and compilation for `--compile`'s side).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tooltune import rundir  # noqa: E402
from tooltune.train.config import config_from_dict  # noqa: E402
from tooltune.formats import IGNORE_INDEX, Example  # noqa: E402

from shown import command  # noqa: E402  (bench/ is the script's own folder)


def gemma_shaped(vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(seed)
    heads = max(1, hidden // 32)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1, head_dim=32,
                              max_position_embeddings=2048, sliding_window=512, pad_token_id=0,
                              layer_types=["full_attention"] * layers)
    return Gemma3ForCausalLM(config)


def course_like_examples(n: int, vocab: int, median: int, trained_ratio: float, seed: int,
                         fixed: bool = False) -> list[Example]:
    """Lengths log-normal around `median` (or all `median`); the trained tokens come in three reply spans."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = median if fixed else max(32, min(4 * median, int(rng.lognormvariate(0, 0.45) * median)))
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        labels = [IGNORE_INDEX] * length
        budget, spans = int(length * trained_ratio), 3
        for s in range(spans):
            size = budget // spans
            start = int(length * (s + 1) / (spans + 1))
            for t in range(start, min(length, start + size)):
                labels[t] = ids[t]
        out.append(Example(ids, labels))
    return out


def course_examples(path: str, format_name: str, tokenizer, n: int, vocab: int) -> list[Example]:
    """The first `n` dialogues of `path` rendered by a chat format (every model turn trained), as the loop sees them."""
    from tooltune.datafiles import read_dialogues
    from tooltune.formats import encode_all, ensure_special_tokens, get_format

    fmt = get_format(format_name).for_tokenizer(tokenizer)
    ensure_special_tokens(tokenizer, fmt.special_tokens)
    if len(tokenizer) > vocab:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} ids, more than the model's {vocab}")
    samples = [s for d in read_dialogues(path) for s in fmt.render(d)]
    report = encode_all(samples[:n], tokenizer, max_length=2048)
    return [Example(e.input_ids, e.labels) for e in report.examples]


def rates(tokens: list[float], trained: list[float], ends: list[float], start: float, skip: int):
    """(tokens/s, trained tokens/s, seconds) over the steps after the first `skip`, from per-step counts and end times."""
    begin = ends[skip - 1] if skip else start
    wall = ends[-1] - begin
    return sum(tokens[skip:]) / wall, sum(trained[skip:]) / wall, wall


def run_tooltune(model_dir: Path, tokenizer, examples, args, compile: bool = False) -> tuple[float, float, float]:
    from transformers import AutoModelForCausalLM
    from tooltune.train.loop import run_training
    from tooltune.train import methods
    cfg = config_from_dict({"model": {"path": str(model_dir)},
                            "method": {"name": args.method, "r": 8, "alpha": 16, "dropout": 0.0},
                            "data": {"group_by_length": True, "max_length": 8192},
                            "train": {"out": tempfile.mkdtemp(), "max_steps": args.steps, "batch_size": args.batch,
                                      "lr": 1e-4, "warmup_steps": 0, "log_every": 1, "compile": compile,
                                      "mixed_precision": "bf16" if args.bf16 else "no"}})
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **methods.load_kwargs(args.method, dtype))
    if torch.cuda.is_available() and args.method != "qlora":
        model.cuda()
    run_training(cfg, model, tokenizer, examples, [])
    # The loop's log, one line per step: cumulative tokens and time since the start of the first step.
    import json
    log = [json.loads(line) for line in (Path(cfg.train.out) / rundir.LOG).read_text().splitlines()]
    log = [e for e in log if "tokens" in e]
    steps = [(e["tokens"] - p["tokens"], e["trained_tokens"] - p["trained_tokens"])
             for p, e in zip([{"tokens": 0, "trained_tokens": 0}] + log, log)]
    return rates([t for t, _ in steps], [t for _, t in steps], [e["elapsed_s"] for e in log], 0.0, args.skip)


def run_hf_trainer(model_dir: Path, tokenizer, examples, args) -> tuple[float, float, float]:
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback,
                              TrainingArguments)

    class Clock(TrainerCallback):  # the same span as tooltune's: first step start to each step's end
        ends: list[float]

        def on_step_begin(self, args, state, control, **kw):
            self.start = getattr(self, "start", None) or time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    class Counting(Trainer):  # each step's non-padding and trained tokens, whatever order the sampler chose
        counts: list[tuple[int, int]]

        def training_step(self, model, inputs, *rest, **kw):
            trained = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
            self.counts.append((int(inputs["attention_mask"].sum()), trained))
            return super().training_step(model, inputs, *rest, **kw)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in examples]
    used = rows[:args.steps * args.batch]  # Trainer shuffles; every row is used once in steps x batch
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch,
                              max_steps=args.steps, learning_rate=1e-4, warmup_steps=0, logging_steps=1000,
                              save_strategy="no", report_to=[], dataloader_num_workers=0, seed=0,
                              disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=args.bf16)
    trainer = Counting(model=model, args=targs, train_dataset=used,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    trainer.counts = []
    clock = Clock()
    clock.ends = []
    trainer.add_callback(clock)
    trainer.train()
    return rates([t for t, _ in trainer.counts], [t for _, t in trainer.counts], clock.ends, clock.start, args.skip)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local HF causal LM with q_proj/v_proj (default: Gemma-3-shaped, built here)")
    parser.add_argument("--vocab", type=int, default=262144)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--median", type=int, default=460, help="median example length in tokens")
    parser.add_argument("--trained", type=float, default=0.13, help="share of tokens that are trained targets")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fixed-length", action="store_true", help="every example exactly --median tokens")
    parser.add_argument("--bf16", action="store_true", help="bf16 weights and autocast on both sides (GPU)")
    parser.add_argument("--method", default="lora", choices=["lora", "qlora"], help="qlora: tooltune side only")
    parser.add_argument("--warmup", type=int, default=0,
                        help="1: an untimed warm-up run of every side before the timed ones (use it on a GPU)")
    parser.add_argument("--sides", default="tooltune,hf", help="which loops to run, comma-separated")
    parser.add_argument("--compile", action="store_true",
                        help="add a side: tooltune with train.compile=true (decoder blocks compiled)")
    parser.add_argument("--skip", type=int, default=0,
                        help="optimizer steps at the start of each run left out of the timing (warm-up, compilation)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train.md"))
    parser.add_argument("--data", help="real dialogues instead of synthetic rows, e.g. the course's train.chatglm3.jsonl")
    parser.add_argument("--format", default="llama2", help="chat format rendering --data")
    parser.add_argument("--tokenizer", help="tokenizer for --data (default: --model's; the built model needs one)")
    args = parser.parse_args()

    from tooltune.train.tiny import tiny_tokenizer
    tokenizer = tiny_tokenizer(vocab_size=300)
    tokenizer.pad_token_id  # noqa: B018  (pad id 0 on both sides)
    workdir = Path(tempfile.mkdtemp())
    if args.model:
        from transformers import AutoConfig
        model_dir = Path(args.model)
        vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    else:
        model_dir, vocab = workdir / "model", args.vocab
        gemma_shaped(vocab, args.hidden, args.layers).save_pretrained(model_dir)
    if args.data:
        from transformers import AutoTokenizer
        source = args.tokenizer or args.model
        if not source:
            parser.error("--data needs --tokenizer (or --model, whose tokenizer is used)")
        tokenizer = AutoTokenizer.from_pretrained(source)
        examples = course_examples(args.data, args.format, tokenizer, args.steps * args.batch, vocab)
    else:
        examples = course_like_examples(args.steps * args.batch, vocab, args.median, args.trained, seed=0,
                                        fixed=args.fixed_length)
    lengths = sorted(len(e.input_ids) for e in examples)
    trained_share = sum(e.trained_tokens for e in examples) / sum(lengths)

    runners = {"tooltune": run_tooltune, "hf": run_hf_trainer,
               "tooltune-compiled": lambda *a: run_tooltune(*a, compile=True)}
    sides = [s for s in ("tooltune", "hf") if s in args.sides.split(",")]
    if args.method == "qlora":
        sides = ["tooltune"]
    if args.compile:
        sides.insert(1, "tooltune-compiled")
    results = {side: [] for side in sides}
    # Untimed: CUDA context, kernel selection, compilation caches and the like warm up for every side.
    for side in sides[:len(sides) if args.warmup else 0]:
        tps = runners[side](model_dir, tokenizer, examples[:2 * args.batch], argparse.Namespace(**{**vars(args),
                                                                                                 "skip": 0}))[0]
        print(f"warm-up {side}: {tps:.0f} tok/s (not counted)", flush=True)
    for r in range(args.repeats):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            results[side].append(runners[side](model_dir, tokenizer, examples, args))
            tps, ttps, wall = results[side][-1]
            print(f"repeat {r} {side:17s} {tps:9.0f} tok/s {ttps:8.0f} trained tok/s  {wall:6.1f} s", flush=True)

    def med(side, i):
        return statistics.median(x[i] for x in results[side])

    speedups = {side: med(side, 0) / med("hf", 0) for side in sides if side != "hf" and "hf" in sides}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    cmd = command("train_throughput.py")
    model_desc = args.model or (f"Gemma-3-shaped, vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers, "
                                f"random init, fp32")
    lines = [
        "# Training throughput: tooltune loop vs Hugging Face Trainer + PEFT",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Hardware: {device}, torch {torch.__version__}, {platform.python_version()}"
        f"{'' if torch.cuda.is_available() else '; machine shared with other jobs, so compare the columns of one run, not absolute numbers across runs'}.  ",
        f"Model: {model_desc}. {args.method} r=8 on q_proj, v_proj{', bf16' if args.bf16 else ''}, batch {args.batch}, {args.steps} optimizer steps, "
        f"{args.repeats} repeats alternating sides (median reported)"
        f"{', after an untimed warm-up run of each side' if args.warmup else ''}"
        f"{f'; the first {args.skip} steps of each run are not timed' if args.skip else ''}.  ",
        f"Data: {len(examples)} {'dialogues of ' + Path(args.data).name + ' (' + args.format + ' format)' if args.data else 'synthetic examples'}, "
        f"median length {lengths[len(lengths) // 2]} tokens, "
        f"{100 * trained_share:.1f}% trained targets.",
        "",
        "| loop | tokens/s (median) | trained tokens/s (median) | runs (tokens/s) |",
        "| --- | ---: | ---: | --- |",
    ]
    for side, name in (("hf", "HF Trainer + PEFT, DataCollatorForSeq2Seq padding"),
                       ("tooltune", "tooltune (head at trained positions, length-grouped)"),
                       ("tooltune-compiled", "tooltune, train.compile=true (decoder blocks compiled)")):
        if side not in results:
            continue
        runs = ", ".join(f"{x[0]:.0f}" for x in results[side])
        lines.append(f"| {name} | {med(side, 0):.0f} | {med(side, 1):.0f} | {runs} |")
    lines += ["", "Speed-up over HF (tokens/s): " + ", ".join(f"{side} **{x:.2f}x**" for side, x in speedups.items())
              if speedups else "", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed levers on the real model: tooltune's loop, lever by lever, against Hugging Face Trainer + PEFT.

    python bench/train_speed.py --model ~/.cache/tooltune/models/gemma3-270m [--dialogues 16] [--repeats 2] \
        [--rows NAME,NAME] [--out bench/results/train_speed.md]

Every row trains LoRA r=16 (alpha 32) on every linear layer of the base, the demo's settings, for 2 epochs over the
same `--dialogues` course train dialogues (the llama2 format with compact observations and schema-ordered
arguments, as the demo renders them), chosen at random with seed 0. Each run is a child process, so its peak
memory (max RSS) is its own and an out-of-memory kill ends only that row. Throughput is counted in non-padding
tokens per second separately for each epoch: the first epoch warms up (and fills the frozen-layer cache where it is
on); the second is how every later epoch runs. "Course epochs per hour" divides by the 488,850 tokens of the course's
1,602 train dialogues in that rendering. Rows repeat `--repeats` times in alternating order; medians are reported.

A GEMM microbenchmark (2048 x 2048 matmuls, float32 and bf16) runs in the same process first, so each row's
achieved FLOP/s can be read against this CPU's own peak. A row's FLOP/s is estimated from the model's shapes:
per token, 2 FLOPs per weight for each forward through a layer, 2 more for its backward (input gradients only: the
weights are frozen; LoRA's own products are under 2% and not counted), the attention products at the example's
length, and the LM head at trained positions (forward and input gradient) over the rows it computes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from shown import command  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

COURSE_TOKENS = 488_850
"""Tokens of the course's 1,602 train dialogues in the llama2 format, compact observations, schema order (Gemma-3)."""

DEMO = ["method.r=16", "method.alpha=32", "method.target_modules=[all-linear]", "data.format=llama2",
        "data.observation=compact", "data.argument_order=schema", "train.lr=1e-3", "train.grad_accum=1",
        "train.warmup_steps=0", "train.log_every=1", "train.eval_every=0", "train.save_every=0",
        "train.mixed_precision=no", "data.dev="]

# name -> (side, batch, dtype, overrides, what it shows). "before" and each lever alone keep the attention mask
# on padded batches (train.skip_padding_mask=false), as the loop did before that lever; "all" rows take every lever.
MASK = "train.skip_padding_mask=false"
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}  # row-name suffix -> model.dtype
ALL = ["method.dropout=0", "method.layers=top:8", "train.cache_frozen=true", "train.output_vocab=domain"]
ALONE = {"dropout0": (["method.dropout=0"], "LoRA dropout 0 (no mask per adapter)"),
         "top8": (["method.layers=top:8"], "adapters on the top 8 of 18 layers"),
         "top8-cache": (["method.layers=top:8", "train.cache_frozen=true"], "top 8 layers + the frozen bottom cached"),
         "domain": (["train.output_vocab=domain"], "softmax over the domain vocabulary")}
ROWS = {
    "hf-fp32-b1": ("hf", 1, "float32", [], "HF Trainer + PEFT, float32"),
    "hf-bf16-b1": ("hf", 1, "bfloat16", [], "HF Trainer + PEFT, bf16 weights and autocast"),
    "hf-fp32-b4": ("hf", 4, "float32", [], "HF Trainer + PEFT, float32"),
    "before-fp32-b1": ("tooltune", 1, "float32", [MASK], "tooltune before the levers, float32"),
    "before-bf16-b1": ("tooltune", 1, "bfloat16", [MASK], "tooltune before the levers, bf16"),
    "before-fp32": ("tooltune", 4, "float32", [MASK], "tooltune before the levers (the demo until now), float32"),
    "before-bf16": ("tooltune", 4, "bfloat16", [MASK], "tooltune before the levers, bf16"),
    **{f"{name}-{tag}": ("tooltune", 4, dtype, [*levers, MASK], what)
       for tag, dtype in DTYPES.items() for name, (levers, what) in ALONE.items()},
    **{f"nomask-{tag}": ("tooltune", 4, dtype, ["train.skip_padding_mask=true"],
                         "padded batches without the attention mask (the causal kernel)")
       for tag, dtype in DTYPES.items()},
    "all-mask-bf16": ("tooltune", 4, "bfloat16", [*ALL, MASK], "all levers but the padding mask kept"),
    "all-bf16": ("tooltune", 4, "bfloat16", ALL, "all levers"),
    "all-fp32": ("tooltune", 4, "float32", ALL, "all levers, float32"),
    "all-bf16-b1": ("tooltune", 1, "bfloat16", ALL, "all levers"),
}


def gemm_peak(size: int = 2048, repeats: int = 20) -> dict[str, float]:
    """GFLOP/s of a size x size matmul in float32 and bf16, best of `repeats` after a warm-up."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
        out[str(dtype).removeprefix("torch.")] = 2 * size ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flops_per_token(model_dir: str, overrides: list[str], lengths: list[int], trained_share: float,
                    vocab_rows: int) -> float:
    """Estimated matmul FLOPs per token of one training step (see the module docstring)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir).get_text_config()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    n = c.num_hidden_layers
    top = next((int(o.split(":")[1]) for o in overrides if o.startswith("method.layers=top:")), n)
    cached = "train.cache_frozen=true" in overrides
    mean_len = sum(x * x for x in lengths) / sum(lengths)  # token-weighted mean length: attention grows with it
    attention = 2 * 2 * q * mean_len / 2  # QK^T and AV, causal (half the pairs), per token per layer
    trained_layers, frozen_layers = top, 0 if cached else n - top
    body = (4 * per_layer + 2 * 2 * attention) * trained_layers + (2 * per_layer + 2 * attention) * frozen_layers
    head = trained_share * 2 * 2 * c.hidden_size * vocab_rows
    return body + head


def child(args) -> None:
    """One row, one run: train 2 epochs, print a JSON line with per-epoch rates and peak memory."""
    side, batch, dtype, overrides, _ = ROWS[args.child]
    from tooltune.train.config import load_config
    from tooltune.train.recipe import prepare

    cfg = load_config(None, [f"model.path={args.model}", f"data.train={args.data}", *DEMO,
                             f"train.batch_size={batch}", f"model.dtype={dtype}", *overrides,
                             f"train.out={tempfile.mkdtemp()}/run"])
    p = prepare(cfg)
    rng = random.Random(0)
    examples = rng.sample(p.train, args.dialogues)
    lengths = [len(e.input_ids) for e in examples]
    trained_share = sum(e.trained_tokens for e in examples) / sum(lengths)
    steps_per_epoch = -(-len(examples) // batch)
    if side == "tooltune":
        from tooltune.train.config import replace
        from tooltune import rundir
        from tooltune.train.loop import output_vocab, run_training
        cfg = replace(p.cfg, train={"max_steps": 2 * steps_per_epoch})
        run_training(cfg, p.model, p.tokenizer, examples, [], meta=p.meta, new_token_ids=p.new_token_ids)
        log = [json.loads(line) for line in (Path(cfg.train.out) / rundir.LOG).read_text().splitlines()]
        log = [e for e in log if "tokens" in e]
        ends = [e["elapsed_s"] for e in log]
        tokens = [e["tokens"] for e in log]
        vocab_rows = len(output_vocab(examples)) if cfg.train.output_vocab == "domain" else len(p.tokenizer)
    else:
        ends, tokens = run_hf(p, examples, batch, dtype)
        vocab_rows = p.model.config.get_text_config().vocab_size
    k = steps_per_epoch
    epoch1 = tokens[k - 1] / ends[k - 1]
    epoch2 = (tokens[2 * k - 1] - tokens[k - 1]) / (ends[2 * k - 1] - ends[k - 1])
    print("RESULT " + json.dumps({
        "row": args.child, "epoch1": epoch1, "epoch2": epoch2,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "flops_per_token": flops_per_token(args.model, overrides, lengths, trained_share, vocab_rows),
        "tokens": sum(lengths), "median_length": statistics.median(lengths), "trained_share": trained_share}),
        flush=True)


def run_hf(p, examples, batch: int, dtype: str) -> tuple[list[float], list[float]]:
    """HF Trainer + PEFT on the same examples, LoRA as tooltune's rows; (step end times, cumulative tokens)."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    model = get_peft_model(p.model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05,
                                               target_modules="all-linear"))
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in examples]
    ends: list[float] = []
    tokens: list[float] = []
    clock = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            clock.setdefault("start", time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter() - clock["start"])

    class Counting(Trainer):
        def training_step(self, model, inputs, *rest, **kw):
            tokens.append((tokens[-1] if tokens else 0) + int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, *rest, **kw)

    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, num_train_epochs=2,
                              learning_rate=1e-3, logging_steps=1000, save_strategy="no", report_to=[],
                              dataloader_num_workers=0, seed=0, disable_tqdm=True,
                              use_cpu=not torch.cuda.is_available(), bf16=dtype == "bfloat16")
    trainer = Counting(model=model, args=targs, train_dataset=rows,
                       data_collator=DataCollatorForSeq2Seq(p.tokenizer, padding=True))
    trainer.add_callback(Clock())
    trainer.train()
    return ends, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/hotel/v3_chatglm3_llama2/train.chatglm3.jsonl"))
    parser.add_argument("--dialogues", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    peak = gemm_peak()
    print(f"GEMM 2048: float32 {peak['float32']:.0f} GFLOP/s, bf16 {peak['bfloat16']:.0f} GFLOP/s", flush=True)
    results: dict[str, list[dict]] = {n: [] for n in names}
    failures: dict[str, str] = {}
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name in failures:
                continue
            cmd = [sys.executable, __file__, "--model", args.model, "--data", args.data, "--dialogues",
                   str(args.dialogues), "--child", name]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                why = "killed (out of memory)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
                failures[name] = why
                print(f"{name}: {why}\n{proc.stderr[-2000:]}", flush=True)
                continue
            results[name].append(json.loads(line[7:]))
            x = results[name][-1]
            print(f"repeat {r} {name:16s} epoch 1 {x['epoch1']:6.0f} tok/s, epoch 2 {x['epoch2']:6.0f} tok/s, "
                  f"peak {x['peak_gib']:.1f} GiB", flush=True)
    write(args, names, results, failures, peak)
    return 0


def write(args, names, results, failures, peak) -> None:
    def med(name, key):
        return statistics.median(x[key] for x in results[name])

    from tooltune.hardware import cpu_name, native_bf16
    cpu = cpu_name()
    any_row = next(results[n][0] for n in names if results[n])
    lines = ["# Training speed levers on Gemma-3-270M (LoRA r=16 on every linear layer)", "",
             f"Command: `{command('train_speed.py')}`  ",
             f"Hardware: {cpu}, {os.cpu_count()} cores, native bf16: {native_bf16()}; torch {torch.__version__}. "
             f"GEMM 2048x2048 peak: float32 **{peak['float32']:.0f}** GFLOP/s, bf16 **{peak['bfloat16']:.0f}** "
             f"GFLOP/s.  ",
             f"Data: {args.dialogues} course train dialogues ({any_row['tokens']} tokens, median "
             f"{any_row['median_length']:.0f}, {100 * any_row['trained_share']:.1f}% trained), 2 epochs; "
             f"median of {args.repeats} runs per row, rows in alternating order.", "",
             "| row | batch | dtype | epoch 1 tokens/s | later epochs tokens/s | course epochs per hour | "
             "peak memory | est. GFLOP/s (% of peak) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        side, batch, dtype, overrides, what = ROWS[name]
        label = f"{what} (`{name}`{': ' + ' '.join(overrides) if overrides else ''})"
        if name in failures:
            lines.append(f"| {label} | {batch} | {dtype} | {failures[name]} | | | | |")
            continue
        e2 = med(name, "epoch2")
        gflops = e2 * med(name, "flops_per_token") / 1e9
        p = peak["bfloat16" if dtype == "bfloat16" else "float32"]
        lines.append(f"| {label} | {batch} | {dtype} | {med(name, 'epoch1'):.0f} | {e2:.0f} | "
                     f"{e2 * 3600 / COURSE_TOKENS:.2f} | {med(name, 'peak_gib'):.1f} GiB | "
                     f"{gflops:.0f} ({100 * gflops / p:.0f}%) |")
    lines.append("")
    pairs = [("before-fp32-b1", "hf-fp32-b1"), ("before-bf16-b1", "hf-bf16-b1"), ("all-bf16-b1", "hf-fp32-b1"),
             ("all-bf16-b1", "hf-bf16-b1")]
    ratios = [f"`{a}` / `{b}`: **{med(a, 'epoch2') / med(b, 'epoch2'):.2f}x**" for a, b in pairs
              if results.get(a) and results.get(b)]
    if ratios:
        lines += ["Speed-ups at batch 1 (later epochs): " + "; ".join(ratios) + ".", ""]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())

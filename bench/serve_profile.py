"""Where a bot turn's time goes on a CPU: one call turn of a run, decoded as `tooltune serve` did before (the run's
dtype, the adapter unmerged) and as it does now (float32 on a CPU, the adapter merged), the time of one decoding
step in each setting, the operators of one step (torch profiler), and one vector-times-matrix product of the
model's shapes in bf16 and float32. Results go to bench/results/serve_profile.md with the command.

    python bench/serve_profile.py --run bench/artifacts/g7
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from shown import command as shown_command  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve_profile.md"
ASK = "帮我找一家评分4.5以上的经济型酒店"


def product_ms(rows: int, cols: int, dtype, repeats: int) -> float:
    import torch

    weight, vector = torch.randn(rows, cols, dtype=dtype), torch.randn(1, cols, dtype=dtype)
    with torch.inference_mode():
        torch.nn.functional.linear(vector, weight)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(vector, weight)
    return (time.perf_counter() - start) / repeats * 1000


def step_ms(model, prompt: list[int], steps: int = 8) -> float:
    import torch

    with torch.inference_mode():
        out = model(torch.tensor([prompt]), use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
    return (time.perf_counter() - start) / steps * 1000


def operators(model, prompt: list[int]) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        out = model(torch.tensor([prompt]), use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                cache = model(token, past_key_values=cache, use_cache=True).past_key_values
    averages = prof.key_averages()
    rows = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:6]
    total = sum(e.self_cpu_time_total for e in averages)
    lines = [f"| {e.key} | {e.count // 3} | {e.self_cpu_time_total / 3 / 1000:.1f} | "
             f"{100 * e.self_cpu_time_total / total:.0f}% |" for e in rows]
    head = model.get_output_embeddings().weight
    lines.append(f"| (of which the output layer, {head.shape[0]:,} x {head.shape[1]}) | 1 | "
                 f"{product_ms(head.shape[0], head.shape[1], head.dtype, 3):.1f} | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = shown_command("serve_profile.py")
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from tooltune.bot.policy import load_policy
    from tooltune.dialogue import User
    from tooltune.formats import get_format
    from tooltune.inference import Generator
    from tooltune.runs import load_for_inference

    load_before = os.getloadavg()
    products = [(rows, cols, product_ms(rows, cols, torch.bfloat16, 20), product_ms(rows, cols, torch.float32, 20))
                for rows, cols in ((2048, 640), (640, 2048), (262144, 640))]
    before = load_for_inference(args.run, add_missing_tokens=False, device="cpu")  # serve's loading until now
    old = Generator(before.model, before.tokenizer, get_format(before.format),
                    config=before.generation(max_new_tokens=64, batch_size=1))
    new = load_policy(args.run, device="cpu", max_new_tokens=64).generator
    from transformers.generation.stopping_criteria import StopStringCriteria

    tokenizer = new.tokenizer
    start = time.perf_counter()
    StopStringCriteria(tokenizer, list(new.text_stops))
    stop_table_s = time.perf_counter() - start
    history = [User(ASK)]
    prompt = new.prompt_ids(history)
    turns = []
    for name, gen in (("before: the run's dtype, adapter unmerged", old), ("now: float32, adapter merged", new)):
        gen.predict([history])  # warm-up
        start = time.perf_counter()
        pred = gen.predict([history])[0]
        turns.append((name, next(gen.model.parameters()).dtype, time.perf_counter() - start, pred.new_tokens,
                      step_ms(gen.model, prompt), pred.raw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread_ms = step_ms(new.model, prompt)
    torch.set_num_threads(threads)
    table_turns = "\n".join(f"| {n} | {str(d).replace('torch.', '')} | {s:.2f} | {k} | {ms:.0f} |"
                            for n, d, s, k, ms, _ in turns)
    table_products = "\n".join(f"| 1 x {c} times {c} x {r} | {b:.2f} | {f:.2f} | {b / f:.0f}x |"
                               for r, c, b, f in products)
    text = f"""# Bot: where a turn's time goes on the CPU

Command: `{command}` (on {platform.machine()}, {os.cpu_count()} CPU cores, load average before: {" ".join(
        f"{x:.1f}" for x in load_before)}, after: {" ".join(f"{x:.1f}" for x in os.getloadavg())}).
{args.note}

One call turn of `{args.run}` (llama2 format, the ask "{ASK}", greedy, at most 64 tokens), decoded by `predict` as
`tooltune serve` loaded the run before this change and as it loads it now; "step" is one decoding step with the KV
cache (the mean of 8) after a {len(prompt)}-token prompt.

| loading | dtype | turn (s) | tokens | step (ms) |
| --- | --- | ---: | ---: | ---: |
{table_turns}

Both wrote: `{turns[0][5]!r}` / `{turns[1][5]!r}`. Both turns above already use the stop-string table built
once per generator; until this change `generate(stop_strings=...)` built it at every call, which took
{stop_table_s:.1f} s for Gemma's {len(tokenizer):,}-token vocabulary here: add that to every turn before.
One step now with torch on 1 thread instead of {threads}: {one_thread_ms:.0f} ms (other work shared the cores).

One vector times one weight matrix of the model's shapes (ms, mean of 20): bf16 is native on these cores
(AVX512-BF16), and still many times slower for a single vector, which is what decoding one token at a time is.

| product | bf16 (ms) | float32 (ms) | bf16 / float32 |
| --- | ---: | ---: | ---: |
{table_products}

The operators of one decoding step now (float32, merged; torch profiler, the mean of 3 steps, self time; the
output layer's product timed alone after them):

| operator | calls per step | ms per step | share |
| --- | ---: | ---: | ---: |
{operators(new.model, prompt)}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

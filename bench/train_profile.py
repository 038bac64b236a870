"""Where a training step's time goes: Gemma-3-270M LoRA (the demo's settings) on course dialogues, part by part.

    python bench/train_profile.py --model ~/.cache/tooltune/models/gemma3-270m [--steps 6] [--skip 2] \
        [--label "float32"] [key.path=value ...] [--out bench/results/train_profile.md]

The run is the real recipe (`tooltune.train.recipe.prepare` + `run_training`, so every lever is a config override,
e.g. `model.dtype=bfloat16 method.layers=top:8`), stopped after `--steps` optimizer steps; the first `--skip` are not
timed. Forward and backward time per part comes from module hooks (forward pre/post, full backward pre/post) around
the embeddings, each decoder layer's attention, MLP and norms; the LM head + loss is the loss module's forward minus
the decoder's; the backward of the head + loss is the whole backward minus the decoder parts; the optimizer from the
global optimizer-step hooks; collation from a timed wrapper; "other" is the rest of the step (clipping, the
scheduler, logging, Python). A second table lists the operators with the most self time (torch.profiler).
Each run appends its section to `--out`, so the tables of several levers sit side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tooltune.hardware import cpu_name  # noqa: E402
from tooltune.train import loop as train_loop  # noqa: E402
from tooltune.train.config import load_config  # noqa: E402
from tooltune.train.loss import transformers_model  # noqa: E402
from tooltune.train.recipe import prepare  # noqa: E402

from shown import command  # noqa: E402  (bench/ is the script's own folder)

DEMO_OVERRIDES = ["method.r=16", "method.alpha=32", "method.target_modules=[all-linear]", "data.dev=",
                  "data.format=llama2", "data.observation=compact", "data.argument_order=schema", "train.lr=1e-3",
                  "train.batch_size=4", "train.grad_accum=1", "train.warmup_steps=0", "train.log_every=1",
                  "train.eval_every=0", "train.save_every=0", "train.mixed_precision=no", "model.dtype=float32"]


class PartClock:
    """Inclusive seconds per part, forward and backward, accumulated only while `on`."""

    def __init__(self):
        self.on = False
        self.seconds: dict[str, float] = defaultdict(float)
        self._starts: dict[int, float] = {}

    def attach(self, module: torch.nn.Module, part: str) -> None:
        key = id(module)

        def fwd_pre(m, args):
            self._starts[key] = time.perf_counter()

        def fwd_post(m, args, out):
            if self.on:
                self.seconds[f"forward: {part}"] += time.perf_counter() - self._starts.pop(key)

        def bwd_pre(m, grad_out):
            self._starts[-key] = time.perf_counter()

        def bwd_post(m, grad_in, grad_out):
            if self.on and -key in self._starts:
                self.seconds[f"backward: {part}"] += time.perf_counter() - self._starts.pop(-key)

        module.register_forward_pre_hook(fwd_pre)
        module.register_forward_hook(fwd_post)
        module.register_full_backward_pre_hook(bwd_pre)
        module.register_full_backward_hook(bwd_post)

    def add(self, part: str, seconds: float) -> None:
        if self.on:
            self.seconds[part] += seconds


def attach_parts(clock: PartClock, model) -> None:
    causal_lm = transformers_model(model)
    decoder = causal_lm.base_model if hasattr(causal_lm, "base_model") else causal_lm.model
    clock.attach(decoder.get_input_embeddings(), "embeddings")
    clock.attach(decoder, "decoder (all)")
    for layer in decoder.layers:
        clock.attach(layer.self_attn, "attention")
        clock.attach(layer.mlp, "MLP")
        for name, child in layer.named_children():
            if "norm" in name.lower():
                clock.attach(child, "norms")
    clock.attach(decoder.norm, "norms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the base: a local Hugging Face folder (model prepare)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/hotel/"
                                              "v3_chatglm3_llama2/train.chatglm3.jsonl"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--dialogues", type=int, default=0,
                        help="train on N dialogues drawn at random (seed 0) for two epochs and time the second, as "
                             "every later epoch runs (train.cache_frozen serves the frozen layers from the cache "
                             "there); --steps and --skip then follow from N")
    parser.add_argument("--label", default="", help="the section's title (default: the overrides)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_profile.md"))
    parser.add_argument("overrides", nargs="*", help="config overrides on top of the demo's settings")
    args = parser.parse_args()

    cfg = load_config(None, [f"model.path={args.model}", f"data.train={args.data}",
                             f"train.out={tempfile.mkdtemp()}/run", f"train.max_steps={args.steps + 1}",
                             *DEMO_OVERRIDES, *args.overrides])
    p = prepare(cfg)
    train = p.train
    if args.dialogues:
        import random
        train = random.Random(0).sample(p.train, args.dialogues)
        args.skip = -(-args.dialogues // cfg.train.batch_size)
        args.steps = 2 * args.skip
        from tooltune.train.config import replace
        p.cfg = replace(p.cfg, train={"max_steps": args.steps + 1})
    clock = PartClock()
    step_ends: list[float] = []

    def on_step_end(optimizer, *_):
        step_ends.append(time.perf_counter())
        clock.on = args.skip <= len(step_ends) < args.steps + 1

    opt_start = {}
    register_optimizer_step_pre_hook(lambda o, *a: opt_start.update(t=time.perf_counter()))
    register_optimizer_step_post_hook(
        lambda o, *a: clock.add("optimizer step", time.perf_counter() - opt_start["t"]))
    register_optimizer_step_post_hook(on_step_end)

    original_collate = train_loop.collate

    def timed_collate(*a, **k):
        t = time.perf_counter()
        out = original_collate(*a, **k)
        clock.add("data: collation", time.perf_counter() - t)
        return out
    train_loop.collate = timed_collate

    original_backward = torch.Tensor.backward

    def timed_backward(self, *a, **k):
        t = time.perf_counter()
        out = original_backward(self, *a, **k)
        clock.add("backward (all)", time.perf_counter() - t)
        return out
    torch.Tensor.backward = timed_backward

    def on_start(model):
        attach_parts(clock, model)
        loss_cls = train_loop.TokenLoss
        original_forward = loss_cls.forward

        def timed_forward(self, *a, **k):
            t = time.perf_counter()
            out = original_forward(self, *a, **k)
            clock.add("forward (all)", time.perf_counter() - t)
            return out
        loss_cls.forward = timed_forward

    tokens = []
    original_step = train_loop.train_step

    def counting_step(accelerator, loss_module, window, *a, **k):
        tokens.append(sum(len(e.input_ids) for mb in window for e in mb))
        return original_step(accelerator, loss_module, window, *a, **k)
    train_loop.train_step = counting_step

    from torch.profiler import ProfilerActivity, profile, schedule
    prof_steps = args.steps - args.skip
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=args.skip, warmup=0, active=prof_steps, repeat=1)) as prof:
        register_optimizer_step_post_hook(lambda o, *a: prof.step())
        train_loop.run_training(p.cfg, p.model, p.tokenizer, train, [], meta=p.meta, stop_after=args.steps,
                                on_start=on_start, new_token_ids=p.new_token_ids)
    wall = step_ends[args.steps - 1] - step_ends[args.skip - 1]
    timed_tokens = sum(tokens[args.skip:args.steps])
    s = clock.seconds
    parts = {name: s[name] for name in s if name.startswith(("forward: ", "backward: ")) and "(all)" not in name}
    decoder_fwd = s["forward: decoder (all)"]
    rows = [(name, parts[name]) for name in sorted(parts) if "decoder" not in name]
    rows.append(("forward: LM head + loss", s["forward (all)"] - decoder_fwd))
    bwd_parts = sum(v for k, v in parts.items() if k.startswith("backward: ") and "decoder" not in k)
    rows.append(("backward: LM head + loss, decoder glue", s["backward (all)"] - bwd_parts))
    rows += [("optimizer step", s["optimizer step"]), ("data: collation", s["data: collation"])]
    rows.append(("other (clipping, scheduler, logging, Python)", wall - sum(v for _, v in rows)))

    cmd = command("train_profile.py")
    title = args.label or (" ".join(args.overrides) or "the demo's settings")
    cpu = cpu_name()
    lines = [f"## {title}", "", f"Command: `{cmd}`  ",
             f"Hardware: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}. "
             f"{args.steps - args.skip} timed steps of {cfg.train.batch_size} dialogues: {timed_tokens} tokens in "
             f"{wall:.1f} s, **{timed_tokens / wall:.0f} tokens/s** (hooks and the profiler cost a few percent).",
             "", "| part | s per step | share |", "| --- | ---: | ---: |"]
    n = args.steps - args.skip
    for name, v in rows:
        lines.append(f"| {name} | {v / n:.3f} | {100 * v / wall:.1f}% |")
    lines += ["", "Operators with the most self CPU time:", "", "| operator | calls | self s per step | share |",
              "| --- | ---: | ---: | ---: |"]
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    for e in events:
        lines.append(f"| `{e.key}` | {e.count // n} | {e.self_cpu_time_total / 1e6 / n:.3f} | "
                     f"{100 * e.self_cpu_time_total / 1e6 / wall:.1f}% |")
    text = "\n".join(lines) + "\n\n"
    out = Path(args.out)
    if not out.exists():
        out.write_text("# Training profile: Gemma-3-270M LoRA on the course dialogues\n\n" + __doc__.split("\n\n", 2)[2]
                       + "\n", encoding="utf-8")
    with out.open("a", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

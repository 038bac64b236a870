"""How long `tooltune eval` takes to generate a dialogue file's turn units, with the prompt prefix read once per
dialogue (`GenerationConfig.reuse_prefix`, the default) and without it (`--no-prefix-reuse`), in the same process,
one after the other; whether the predictions are the same; and where the time goes.

    python bench/eval_speed.py --run bench/artifacts/g7 [--data FILE] [--limit N] [--side off:16 --side on:16 ...]

The run is loaded once per setting as `tooltune eval` loads it, and each side builds the `Generator` that
`tooltune eval RUN --batch-size B --max-new-tokens 160 --domain-vocab` builds and times its `predict` over the units
(what eval's `generation_seconds` times). A side is `off|on[:BATCH[:DTYPE[:FLAG...]]]`: prefix reuse off or on,
batch size (default 16), dtype (default auto: the run's), and flags: `fixed`, greedy decoding in fixed batches by
`generate` (`--no-continuous-batching`; default: continuous batching), `merged`, the adapter merged into the base, as
`tooltune serve` loads a run. Forward hooks on the model's decoder (its layers; the output layer's time is in
the rest) split each side's time into prompt reads (forward passes over more than one token a row: a batch's
prefill without reuse, the hosts' reads with it), decoding steps (one token a row; with reuse, a batch's first
step reads its prompts' last tokens) and the rest (`generate`'s own work between steps, the output layer,
assembling caches, rendering prompts). Predictions (raw text and token counts) are compared unit by unit with the
first side's, and scored. Results go to bench/results/eval_speed.md with the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shown import command as shown_command  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "eval_speed.md"
TEST = "hotel/v3_chatglm3_llama2/test.chatglm3.jsonl"


@dataclass
class Profile:
    """Time in the model's forward passes, by how many tokens a row each pass reads."""

    read_s: float = 0.0
    reads: int = 0
    step_s: float = 0.0
    steps: int = 0
    rows_stepped: int = 0
    started: list = field(default_factory=list)

    def attach(self, model):
        # The decoder's own call: PEFT's LoRA wrapper calls the causal LM's `forward` directly, past its hooks.
        owner = model.get_base_model() if hasattr(model, "get_base_model") else model
        owner = owner.get_decoder()

        def before(module, args, kwargs):
            ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
            if ids is None and args:
                ids = args[0]
            self.started.append((time.perf_counter(), tuple(ids.shape[:2])))

        def after(module, args, kwargs, output):
            start, (rows, tokens) = self.started.pop()
            seconds = time.perf_counter() - start
            if tokens > 1:
                self.read_s, self.reads = self.read_s + seconds, self.reads + 1
            else:
                self.step_s, self.steps, self.rows_stepped = self.step_s + seconds, self.steps + 1, \
                    self.rows_stepped + rows

        return [owner.register_forward_pre_hook(before, with_kwargs=True),
                owner.register_forward_hook(after, with_kwargs=True)]


@dataclass
class Side:
    reuse: bool
    batch: int
    dtype: str
    merged: bool
    fixed: bool = False

    @classmethod
    def parse(cls, text: str) -> "Side":
        parts = text.split(":")
        flags = parts[3:]
        if parts[0] not in ("on", "off") or not set(flags) <= {"merged", "fixed"} or len(set(flags)) < len(flags):
            raise SystemExit(f"a side is off|on[:BATCH[:DTYPE[:merged][:fixed]]], not {text!r}")
        return cls(parts[0] == "on", int(parts[1]) if len(parts) > 1 else 16, parts[2] if len(parts) > 2 else "auto",
                   "merged" in flags, "fixed" in flags)

    @property
    def name(self) -> str:
        return (f"prefix reuse {'on' if self.reuse else 'off'}, batch {self.batch}, dtype {self.dtype}"
                + (", adapter merged" if self.merged else "")
                + (", fixed batches" if self.fixed else ", continuous batching"))


def load(run: Path, dtype: str, merged: bool):
    from tooltune.datafiles import read_dialogues
    from tooltune.formats import get_format
    from tooltune.inference import domain_vocab
    from tooltune.runs import load_for_inference, training_data

    loaded = load_for_inference(run, dtype=dtype)
    if merged:  # as `tooltune serve` loads a run on a CPU
        loaded.model = loaded.model.merge_and_unload()
    fmt = get_format(loaded.format)
    vocab = domain_vocab(read_dialogues(training_data(run)), loaded.tokenizer, fmt, loaded.observation,
                         loaded.argument_order)
    return loaded, fmt, vocab


def measure(loaded, fmt, vocab, units, side: Side, max_new_tokens: int) -> dict:
    import torch

    from tooltune.inference import Generator

    config = loaded.generation(max_new_tokens=max_new_tokens, batch_size=side.batch, output_vocab=vocab,
                               reuse_prefix=side.reuse, continuous=not side.fixed)
    generator = Generator(loaded.model, loaded.tokenizer, fmt, config=config)
    profile = Profile()
    hooks = profile.attach(loaded.model)
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        preds = generator.predict([u.history for u in units], [u.tools for u in units], progress=True)
    finally:
        for hook in hooks:
            hook.remove()
    wall = time.perf_counter() - start
    prompts = [generator.prompt_ids(u.history, u.tools) for u in units]
    return dict(side=side, preds=preds, wall=wall, profile=profile, stats=generator.prefix_stats,
                load=(load_before, os.getloadavg()), prompt_tokens=sum(map(len, prompts)),
                dtype=str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
                rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, threads=torch.get_num_threads())


def scores(units, preds) -> dict:
    from tooltune.evaluate.predictions import Row
    from tooltune.evaluate.score import score

    return score([Row(u.id, u.gold, p.parsed.turn, p.raw) for u, p in zip(units, preds)])


def display(path: Path) -> str:
    """`path` relative to the repository where it lies inside it or beside it (the course data in `../shared`): no
    machine path in a results file."""
    resolved = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        try:
            return prefix + str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)


def report(args, command: str, units, total_units: int, results: list[dict]) -> str:
    base = results[0]
    scale = total_units / len(units)
    lines = ["# `tooltune eval`: generation time by decoding setting (prefix reuse, batching, dtype)", "",
             f"Command: `{command}` (on {platform.machine()}, {os.cpu_count()} CPU cores; "
             f"the load averages before and after each side are in the table).", ""]
    if args.note:
        lines += [args.note, ""]
    lines += [f"{len(units)} turn units of `{display(args.data)}`" + (f" (the first {len(units)} of {total_units})"
                                                             if len(units) < total_units else "")
              + f", {display(args.run)}, `--max-new-tokens {args.max_new_tokens} --domain-vocab`, greedy.", ""]
    lines += ["| side | dtype | wall (s) | prompt reads (s, passes) | decoding steps (s, steps) | rest (s) "
              "| s / unit | " + (f"x {scale:.2f}: {total_units} units (s, extrapolated) | " if scale != 1 else "")
              + "same as the first side | BLEU-4 | SLOT-F1 | load before / after |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | " + ("---: | " if scale != 1 else "")
              + "---: | ---: | ---: | --- |"]
    for r in results:
        p = r["profile"]
        same = sum(a.raw == b.raw and a.new_tokens == b.new_tokens for a, b in zip(r["preds"], base["preds"]))
        m = scores(units, r["preds"])
        rest = r["wall"] - p.read_s - p.step_s
        lines.append(f"| {r['side'].name} | {r['dtype']} | {r['wall']:.1f} | {p.read_s:.1f} ({p.reads}) | "
                     f"{p.step_s:.1f} ({p.steps}) | {rest:.1f} | {r['wall'] / len(units):.3f} | "
                     + (f"{r['wall'] * scale:.0f} | " if scale != 1 else "")
                     + f"{same}/{len(units)} | {m['bleu4']:.2f} | {m['slot_f1']:.2f} | "
                     f"{' '.join(f'{x:.1f}' for x in r['load'][0])} / {' '.join(f'{x:.1f}' for x in r['load'][1])} |")
    lines += ["", "Prefix reuse, per side that used it: host reads (forward passes over a dialogue's longest "
              "prompt), the tokens they read against the tokens of all prompts, the most key/value bytes held at "
              "once, and the process's peak resident memory after the side.", "",
              "| side | reads | tokens read / all prompt tokens | time in reads (s) | peak K/V held (MiB) "
              "| peak RSS (GiB) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        s = r["stats"]
        lines.append(f"| {r['side'].name} | {s.reads} | {s.tokens_read:,} / {r['prompt_tokens']:,} | "
                     f"{s.seconds:.1f} | {s.peak_bytes / 2**20:.0f} | {r['rss_gib']:.2f} |")
    for r in results[1:]:
        differing = [(u, a, b) for u, a, b in zip(units, r["preds"], base["preds"])
                     if (a.raw, a.new_tokens) != (b.raw, b.new_tokens)]
        if differing:
            lines += ["", f"Units where `{r['side'].name}` differs from `{base['side'].name}` "
                      f"({len(differing)}; the first 5):", ""]
            for u, a, b in differing[:5]:
                lines.append(f"- `{u.id}`: {b.raw[:160]!r} ({b.new_tokens} tokens) -> {a.raw[:160]!r} "
                             f"({a.new_tokens} tokens)")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "bench" / "artifacts" / "g7")
    parser.add_argument("--data", default=None, help=f"default: the data dir's {TEST}")
    parser.add_argument("--limit", type=int, default=None, help="the first N units only (then extrapolated)")
    parser.add_argument("--side", action="append", default=None,
                        help="off|on[:BATCH[:DTYPE[:merged][:fixed]]], repeatable; the first is the reference "
                             "(default: off:16 on:16)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = shown_command("eval_speed.py")
    sys.path.insert(0, str(ROOT / "src"))
    from tooltune import paths
    from tooltune.evaluate.units import eval_units
    from tooltune.datafiles import read_dialogues

    args.data = args.data or str(paths.data_dir() / TEST)
    sides = [Side.parse(s) for s in (args.side or ["off:16", "on:16"])]
    every = eval_units(read_dialogues(args.data), split=Path(args.data).name.split(".")[0])
    units = every[:args.limit]
    results, models = [], {}
    for side in sides:
        key = (side.dtype, side.merged)
        if key not in models:
            models.clear()  # one model in memory at a time
            models[key] = load(args.run, *key)
        r = measure(*models[key], units, side, args.max_new_tokens)
        print(f"{side.name}: {r['wall']:.1f} s, reads {r['profile'].read_s:.1f} s, steps {r['profile'].step_s:.1f} s",
              flush=True)
        results.append(r)
    text = report(args, command, units, len(every), results)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

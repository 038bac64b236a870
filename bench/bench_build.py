"""Benchmark `tooltune data build` on the shared data: wall time, output sizes, determinism.

Run from the repo root: `PYTHONPATH=src python bench/bench_build.py` (builds with and without `--exclude` of the
course's dev/test sets).
Writes bench/results/build.md (the command, the machine's CPU count, and the numbers).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from tooltune.dataset.pipeline import BuildConfig, build
from tooltune import paths

FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "report.md", "balance.png")


def digest(out: Path) -> str:
    return hashlib.sha256(b"".join((out / f).read_bytes() for f in FILES)).hexdigest()[:16]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    course = paths.data_dir() / paths.COURSE_SPLIT
    held_out = (course / "dev.chatglm3.jsonl", course / "test.chatglm3.jsonl")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run, seed, exclude in (("a", 0, ()), ("b", 0, ()), ("c", 1, ()), ("d", 0, held_out)):
            out = Path(tmp) / run
            start = time.perf_counter(), time.process_time()
            summary = build(BuildConfig(out=out, seed=seed, exclude=exclude))
            wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
            rows.append((run, seed, bool(exclude), wall, cpu, summary, digest(out)))
    lines = ["# data build benchmark", "", f"Command: `PYTHONPATH=src python bench/bench_build.py` ({os.cpu_count()} "
             f"CPUs, shared with other jobs; Python {sys.version.split()[0]}). Full build: dialog.json + the val/test "
             "zips of ../shared/data, default augmentation. Run d excludes the course's dev/test (`--exclude`).",
             "", "| run | seed | exclude | wall s | CPU s | train | dev | test | removed | shortened | sha256[:16] |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run, seed, excl, wall, cpu, s, d in rows:
        lines.append(f"| {run} | {seed} | {excl} | {wall:.1f} | {cpu:.1f} | {s['splits']['train']} | "
                     f"{s['splits']['dev']} | {s['splits']['test']} | {sum(s['removed'].values())} | "
                     f"{s['shortened']} | `{d}` |")
    lines += ["", f"Same seed, byte-identical outputs (a, b): **{rows[0][6] == rows[1][6]}**; other seed differs "
              f"(a, c): **{rows[0][6] != rows[2][6]}**. Run a includes the first imports (matplotlib).", ""]
    for run in (0, 3):
        s = rows[run][5]
        lines += [f"Run {rows[run][0]}: removed by reason: " + ", ".join(f"{k} {v}" for k, v in
                                                                        sorted(s["removed"].items())) + "; augmented: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(s["augmented"].items())), ""]
    result = Path(__file__).parent / "results" / "build.md"
    result.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

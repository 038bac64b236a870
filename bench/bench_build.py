"""Benchmark `tooltune data build` on the shared data: wall time, output sizes, determinism.

Run from the repo root: `PYTHONPATH=src python bench/bench_build.py [--exclude-course]`.
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

from tooltune.build.pipeline import BuildConfig, build
from tooltune import paths

FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "report.md", "balance.png")


def digest(out: Path) -> str:
    return hashlib.sha256(b"".join((out / f).read_bytes() for f in FILES)).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exclude-course", action="store_true", help="exclude the course's dev and test sets")
    args = parser.parse_args()
    course = paths.data_dir() / paths.COURSE_SPLIT
    exclude = (course / "dev.chatglm3.jsonl", course / "test.chatglm3.jsonl") if args.exclude_course else ()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run, seed in (("a", 0), ("b", 0), ("c", 1)):
            out = Path(tmp) / run
            start = time.perf_counter(), time.process_time()
            summary = build(BuildConfig(out=out, seed=seed, exclude=exclude))
            wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
            rows.append((run, seed, wall, cpu, summary, digest(out)))
    lines = [f"# data build benchmark", "", f"Command: `PYTHONPATH=src python bench/bench_build.py"
             f"{' --exclude-course' if args.exclude_course else ''}` ({os.cpu_count()} CPUs, shared; "
             f"Python {sys.version.split()[0]}). Full build: dialog.json + the val/test zips, default augmentation.",
             "", "| run | seed | wall s | CPU s | train | dev | test | removed | shortened | sha256[:16] of outputs |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run, seed, wall, cpu, s, d in rows:
        lines.append(f"| {run} | {seed} | {wall:.1f} | {cpu:.1f} | {s['splits']['train']} | {s['splits']['dev']} | "
                     f"{s['splits']['test']} | {sum(s['removed'].values())} | {s['shortened']} | `{d}` |")
    same = rows[0][5] == rows[1][5]
    lines += ["", f"Same seed, byte-identical outputs: **{same}**; other seed differs: **{rows[0][5] != rows[2][5]}**.",
              "", "Removed by reason (run a): " + ", ".join(f"{k} {v}" for k, v in sorted(rows[0][4]['removed'].items())),
              "", "Augmented (run a): " + ", ".join(f"{k} {v}" for k, v in sorted(rows[0][4]['augmented'].items()))]
    result = Path(__file__).parent / "results" / "build.md"
    result.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

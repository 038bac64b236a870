"""The long fuzz run: the fuzz tests' targets (tests/fuzz_support.py) with many more inputs each. Counts the inputs
tried, those refused with tooltune's own error, and tracebacks (any other exception: the count must be 0), and
writes bench/results/fuzz.md.

Run: PYTHONPATH=src python bench/fuzz.py --examples 3000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

from fuzz_support import (generated_records, generated_texts, mutated_files, parse_target,  # noqa: E402
                          read_target, search_arguments, search_target)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tooltune.errors import ToolTuneError  # noqa: E402


def fuzz(strategy, target, examples: int, seed_value: int) -> dict:
    stats = {"inputs": 0, "refused": 0, "tracebacks": 0, "first": ""}

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @seed(seed_value)
    @given(strategy)
    def body(case):
        stats["inputs"] += 1
        try:
            target(case)
        except ToolTuneError:
            stats["refused"] += 1
        except Exception:  # noqa: BLE001 - counting them is the point
            stats["tracebacks"] += 1
            stats["first"] = stats["first"] or traceback.format_exc()

    started = time.perf_counter()
    body()
    stats["seconds"] = time.perf_counter() - started
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=3000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.md")
    args = parser.parse_args()

    from tooltune.db import HotelDB

    db = HotelDB.open()
    tmp = Path(tempfile.mkdtemp(prefix="tooltune-fuzz-"))
    targets = [
        ("dialogue readers: mutated course-like files, 5 formats x .jsonl/.json, written back in every format",
         mutated_files(), lambda case: read_target(case, tmp)),
        ("dialogue readers: generated JSON records (surrogates, NaN, huge integers, format keys)",
         generated_records(), lambda case: read_target(case, tmp)),
        ("model-output parsers: 4 chat formats, call texts with hostile literals and JSON",
         generated_texts(), parse_target),
        ("hotel search: hostile arguments (types, huge numbers, names of up to 100k characters)",
         search_arguments, lambda arguments: search_target(db, arguments)),
    ]
    rows = []
    for name, strategy, target in targets:
        stats = fuzz(strategy, target, args.examples, args.seed)
        rows.append((name, stats))
        print(f"{name}: {stats['inputs']} inputs, {stats['refused']} refused, {stats['tracebacks']} tracebacks, "
              f"{stats['seconds']:.0f} s", flush=True)
        if stats["first"]:
            print(stats["first"], file=sys.stderr)
    total = sum(s["inputs"] for _, s in rows)
    tracebacks = sum(s["tracebacks"] for _, s in rows)
    lines = ["# fuzz: hostile input against the readers, parsers and the hotel search", "",
             f"Command: `PYTHONPATH=src python bench/fuzz.py --examples {args.examples} --seed {args.seed}`  ",
             f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores (shared, "
             "niced); strategies in `tests/fuzz_support.py` (the fuzz tests draw from the same strategies).", "",
             "A traceback is any exception other than tooltune's own error (which the CLI prints as "
             "`tooltune: error: FILE:LINE: FIELD: ...` with exit 2); for the readers, what was read must also write "
             "in every format and read back the same.", "",
             "| target | inputs | refused with tooltune's error | tracebacks | seconds |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {s['inputs']:,} | {s['refused']:,} | {s['tracebacks']} | {s['seconds']:.0f} |"
              for name, s in rows]
    lines += ["", f"{total:,} inputs tried, {tracebacks} tracebacks."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

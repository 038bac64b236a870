"""Time `tooltune data convert` on the course's train split: read train.chatglm3.jsonl, write every format.

    PYTHONPATH=src python bench/convert_train.py [--repeats 3]

Writes bench/results/io.md (the median of the repeats, wall-clock seconds, in-process: no interpreter start-up).
"""

from __future__ import annotations

import argparse
import platform
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tooltune import paths
from tooltune.datafiles import FILE_FORMATS, read_file, write_dialogues

RESULTS = Path(__file__).parent / "results" / "io.md"


def timed(fn, repeats: int):
    runs, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = paths.data_file(f"{paths.COURSE_SPLIT}/train.chatglm3.jsonl")
    read_s, report = timed(lambda: read_file(source), args.repeats)
    rows = [f"| read chatglm3 | {len(report.dialogues)} dialogues | {read_s:.3f} |"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILE_FORMATS:
            out = Path(tmp) / f"train.{name}.jsonl"
            write_s, written = timed(lambda: write_dialogues(report.dialogues, out, name), args.repeats)
            size = out.stat().st_size / 2**20
            rows.append(f"| write {name} | {written.records} records, {size:.1f} MiB | {write_s:.3f} |")
            if name == "llama2":
                back_s, back = timed(lambda: read_file(out), args.repeats)
                rows.append(f"| read llama2 (group samples) | {len(back.dialogues)} dialogues | {back_s:.3f} |")
        out = Path(tmp) / "cli.llama2.jsonl"
        cli = [sys.executable, "-m", "tooltune", "data", "convert", str(source), str(out), "--to", "llama2"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        cli_s, _ = timed(lambda: subprocess.run(cli, env=env, check=True, capture_output=True), args.repeats)
        rows.append(f"| CLI `tooltune data convert train.chatglm3.jsonl OUT --to llama2` (whole process) "
                    f"| 4279 samples | {cli_s:.3f} |")
    command = f"PYTHONPATH=src python bench/convert_train.py --repeats {args.repeats}"
    text = "\n".join([
        "# io: converting the course train split (1602 dialogues)", "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"shared 2-core CPU; median of {args.repeats} runs, seconds, in-process.", "",
        "| step | output | seconds |", "| --- | --- | ---: |", *rows, "",
        f"Load average at the end (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on "
        f"{os.cpu_count()} cores shared by other jobs: the numbers fall when the machine is quiet.", ""])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

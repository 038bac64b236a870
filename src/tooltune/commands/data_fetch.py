"""`tooltune data fetch`: download CrossWOZ and the course's hotel data into the cache (see tooltune.dataset.fetch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tooltune import paths
from tooltune.dataset.fetch import fetch_all

HELP = "download CrossWOZ and the course's hotel data into the data cache (skips files already there)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, help="data dir to fill (default: the cache, <cache>/tooltune/data)")
    parser.add_argument("--only", action="append", help="fetch only destinations starting with this (repeatable), "
                                                        "e.g. --only crosswoz/")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")


def run(args: argparse.Namespace) -> int:
    dest = args.dest or paths.cache_dir() / "data"
    for f in fetch_all(dest, only=args.only, timeout=args.timeout, progress=True):
        print(f"{f.status:22} {f.size:>10} {f.path}")
    return 0

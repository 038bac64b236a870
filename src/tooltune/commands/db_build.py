"""`tooltune db build`: write the local hotel database (SQLite) that `search_hotels` runs on."""

from __future__ import annotations

import argparse
import sys

from tooltune.db import build_db

HELP = "build the local hotel database (SQLite) from crosswoz/hotel_db.json and the train dialogues"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data dir holding crosswoz/ and hotel/ (default: see tooltune.paths)")
    parser.add_argument("--out", help="database file to write (default: the user cache's hotels.sqlite)")


def run(args: argparse.Namespace) -> int:
    report = build_db(args.out, args.data_dir)
    learned_from = report.train_source or "nothing (train dialogues not found: hand rules only)"
    print(f"wrote {report.path}: {report.hotels} hotels, {report.facilities} facility names, "
          f"{report.learned_aliases} paraphrases learned from {learned_from}, "
          f"{report.hand_aliases} hand-written paraphrases"
          + (f", {report.dropped_aliases} learned ones dropped (their facility is not in this database)"
             if report.dropped_aliases else ""), file=sys.stderr)
    print(report.path)
    return 0

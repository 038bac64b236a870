"""`tooltune db search ARGS_JSON`: run `search_hotels` on the local database and print the records as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from tooltune.db import HotelDB
from tooltune.jsonio import loads

HELP = "search the local hotel database with search_hotels arguments given as JSON"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arguments",
                        help='search_hotels arguments, e.g. \'{"type": "经济型", "rating_range_lower": 4.5}\'')
    parser.add_argument("--limit", type=int, default=3, help="most records to print (default 3)")
    parser.add_argument("--order", choices=("rating", "database"), default="rating",
                        help="rank by rating then price (default), or in database order as the course's records do")
    parser.add_argument("--db", help="database file (default: the user cache's hotels.sqlite, built if missing)")
    parser.add_argument("--data-dir", help="data dir to build the database from when it is missing or stale")


def run(args: argparse.Namespace) -> int:
    arguments = loads(args.arguments, "arguments")  # the command line's ARGUMENTS (a JSON text)
    result = HotelDB.open(args.db, args.data_dir).search(arguments, limit=args.limit, order=args.order)
    for phrase in result.unmatched:
        print(f"note: facility {phrase!r} matches no facility of the database; it was not used as a filter",
              file=sys.stderr)
    print(json.dumps(result.records, ensure_ascii=False, indent=1))
    return 0

"""How close the local hotel database comes to the records the course's dialogues returned.

For every search turn of `v3_chatglm3_llama2/{train,dev,test}.chatglm3.jsonl` with returned records, run the turn's
arguments on `HotelDB` and count how often its first result is among the dialogue's records (top-1) and how often any
of its first `--limit` results is (any). The dialogue's records come from CrossWOZ's annotations, not from a search,
so some of them break the search's own constraints; those are counted too. Also measures the facility paraphrase
mapping: dev/test phrases that are no database name, right when mapped to a facility all returned records share.

    python bench/db_recall.py [--data-dir D] [--limit 3] [--out bench/results/db.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from tooltune import paths
from tooltune.db import ORDERS, HotelDB, SearchError, search_turns
from tooltune.facilities import record_facilities

from shown import command as shown_command  # bench/ is the script's own folder

SPLITS = ("train", "dev", "test")


def violations(args: dict, record: dict, db: HotelDB) -> list[str]:
    """The constraints of `args` that `record` breaks (facility phrases mapped as the database maps them)."""
    broken = []
    price, rating = record.get("price"), record.get("rating")
    if "type" in args and record.get("type") != args["type"]:
        broken.append("type")
    for key, value, sign in (("price_range_lower", price, 1), ("price_range_upper", price, -1),
                             ("rating_range_lower", rating, 1), ("rating_range_upper", rating, -1)):
        if key in args and (value is None or sign * (value - args[key]) < 0):
            broken.append(key.rsplit("_", 1)[0].replace("_range", ""))
    have = set(record_facilities(record))
    if any(f is not None and f not in have for f in db.map_facilities(args.get("facilities", [])).values()):
        broken.append("facilities")
    if "name" in args and not all(ch in record.get("name", "") for ch in args["name"]):
        broken.append("name")
    return broken


def measure(db: HotelDB, path: Path, limit: int) -> dict:
    c: Counter = Counter()
    broken_by: Counter = Counter()
    for args, records, _ in search_turns(path):
        c["turns"] += 1
        try:
            every = db.search(args, limit=10_000)
        except SearchError:
            c["bad_arguments"] += 1
            continue
        if not records:
            c["no_records"] += 1
            c["no_records_db_empty"] += not every.records
            continue
        c["judged"] += 1
        gold = {r.get("name") for r in records}
        c["db_empty"] += not every.records
        c["among_all"] += any(r["name"] in gold for r in every.records)
        c["matches"] += len(every.records)
        c["records"] += len(records)
        bad = [violations(args, r, db) for r in records]
        c["records_breaking"] += sum(bool(b) for b in bad)
        c["turns_breaking"] += any(bad)
        for b in bad:
            broken_by.update(set(b))
        for order in ORDERS:
            found = [r["name"] for r in db.search(args, limit=limit, order=order).records]
            top1, anyk = bool(found) and found[0] in gold, any(n in gold for n in found)
            c[f"{order}_top1"] += top1
            c[f"{order}_any"] += anyk
            if not any(bad):
                c[f"{order}_clean_top1"] += top1
                c[f"{order}_clean_any"] += anyk
        c["clean"] += not any(bad)
    c.update({f"broken_{k}": v for k, v in broken_by.items()})
    return dict(c)


def paraphrase_accuracy(db: HotelDB, path: Path) -> tuple[int, int, int]:
    """(right, judged, unmatched) over facility phrases that are no database name, in turns with records."""
    right = judged = unmatched = 0
    for args, records, _ in search_turns(path):
        if not records:
            continue
        common = set.intersection(*(set(record_facilities(r)) for r in records))
        for phrase in args.get("facilities", []):
            if phrase in db.facility_names:
                continue
            mapped = db.matcher.match(phrase)
            judged += 1
            right += mapped in common
            unmatched += mapped is None
    return right, judged, unmatched


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "-"


def report(stats: dict[str, dict], para: dict[str, tuple[int, int, int]], limit: int, command: str,
           seconds: float) -> str:
    lines = ["# Local hotel database vs the course's returned records", "",
             f"Command: `{command}` ({seconds:.1f} s on CPU).", "",
             "Search turns of `v3_chatglm3_llama2/*.chatglm3.jsonl` whose dialogue returned records. A dialogue's "
             "record 'breaks the search' when it violates the call's own constraints (facility phrases mapped as "
             "the database maps them); a turn is clean when none of its records does.", "",
             "| split | search turns | with records | mean matches in the database | a record among all matches | "
             "turns whose records break the search | records breaking / all | bad arguments |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for split, c in stats.items():
        g = lambda k: c.get(k, 0)  # noqa: E731
        lines.append(f"| {split} | {g('turns')} | {g('judged')} | {g('matches') / max(g('judged'), 1):.1f} | "
                     f"{pct(g('among_all'), g('judged'))} | {g('turns_breaking')} "
                     f"({pct(g('turns_breaking'), g('judged'))}) | {g('records_breaking')} / {g('records')} | "
                     f"{g('bad_arguments')} |")
    lines += ["", f"First result and any of the first {limit} results among the dialogue's records, by `order`:", "",
              f"| split | order | top-1 | any of top-{limit} | top-1, clean turns | any of top-{limit}, clean turns |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for split, c in stats.items():
        g = lambda k: c.get(k, 0)  # noqa: E731
        for order in ORDERS:
            lines.append(f"| {split} | {order} | {pct(g(f'{order}_top1'), g('judged'))} | "
                         f"{pct(g(f'{order}_any'), g('judged'))} | {pct(g(f'{order}_clean_top1'), g('clean'))} | "
                         f"{pct(g(f'{order}_clean_any'), g('clean'))} |")
    lines += ["", "Which constraint the dialogue's records break (records, by split): " + "; ".join(
        f"{split}: " + ", ".join(f"{k[7:]} {v}" for k, v in sorted(c.items()) if k.startswith("broken_"))
        for split, c in stats.items()) + ".", "",
        "Search turns that returned no records: " + "; ".join(
            f"{split} {c.get('no_records', 0)} (the database also finds nothing for {c.get('no_records_db_empty', 0)})"
            for split, c in stats.items()) + ".", "",
        "## Facility paraphrases (learned from train only)", "",
        "Phrases that are no database facility name, in search turns with records; right = mapped to a facility that "
        "every returned record has.", "",
        "| split | paraphrase occurrences | right | unmatched (skipped) |", "| --- | ---: | ---: | ---: |"]
    for split, (right, judged, unmatched) in para.items():
        lines.append(f"| {split} | {judged} | {right} ({pct(right, judged)}) | {unmatched} |")
    lines += ["", "## Why 100% is not expected", "",
              "- The course's records are CrossWOZ annotations of what a human wizard showed, not the output of "
              "`search_hotels`: the columns above count the turns whose records break the call's own constraints "
              "(a price or rating outside the bounds, a facility the hotel lacks, another type).",
              "- Several hotels satisfy most searches; the wizard picked one of them, not necessarily the best rated, "
              "so top-1 agreement is bounded by ties and by the wizard's choice, and any-of-top-k rises with k.",
              "- The course's facility matching was semantic (a vector database), ours is exact + paraphrase table + "
              "n-gram: a phrase mapped to a different facility changes the candidate set.",
              "- The wizards saw matches in database order and mostly named an early one: `order=\"database\"` "
              "(hotel_id) agrees 2-3 times as often as the default rating order; neither can know the wizard's pick.",
              "- Many course searches returned no records although the database has matches (the counts above): "
              "the wizard found nothing or the dialogue was written that way; they are left out of the rates.",
              "- Train numbers are optimistic for the facility mapping: the paraphrase table was learned on train. "
              "'Right' is lenient: a phrase mapped to a facility nearly every hotel has (吹风机, 24小时热水) is "
              "right whenever the records have it too.", "",
              "## Decisions", "",
              "- Bounds are inclusive (the course's service used strict < and >, its data treats \"4.5分以上\" as "
              ">= 4.5); a hotel without a price is left out only when a price bound is given.",
              "- A facility phrase that maps to nothing is skipped, not used as a filter, and reported "
              "(`SearchResult.unmatched`, a note on stderr from `tooltune db search`): the course's semantic search "
              "still returned hotels for such phrases.",
              "- The n-gram threshold (0.4) was chosen on train: 0.45 and above leave 5 more train paraphrases "
              "unmatched, and dev agreed (40/42 vs 39/42).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "db.md"))
    args = parser.parse_args(argv)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        db = HotelDB.open(Path(tmp) / "hotels.sqlite", args.data_dir)
        course = paths.data_dir(args.data_dir) / paths.COURSE_SPLIT
        stats = {s: measure(db, course / f"{s}.chatglm3.jsonl", args.limit) for s in SPLITS}
        para = {s: paraphrase_accuracy(db, course / f"{s}.chatglm3.jsonl") for s in SPLITS}
        db.close()
    command = shown_command("db_recall.py", argv)
    text = report(stats, para, args.limit, command, time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

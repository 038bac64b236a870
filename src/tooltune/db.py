"""The local hotel database behind `search_hotels`: CrossWOZ's 1133 hotels in an embedded SQLite file.

`build_db` writes the file from `crosswoz/hotel_db.json` plus a table of facility paraphrases learned from the
course's train dialogues; `HotelDB.open` opens it (building or rebuilding it first when it is missing or its sources
changed) and `HotelDB.search` answers a call's arguments the way the course's hotel search does:

- filters are ANDed; price and rating bounds are inclusive ("4.5分以上" means >= 4.5, as the dataset's records do);
- a hotel without a price is left out only when a price bound is given;
- `type` matches exactly; `name` needs every character of the query in the hotel's name, best similarity first;
- every facility asked is required, after mapping the phrase to a database facility (`tooltune.facilities`);
  a phrase that maps to nothing is SKIPPED (it does not filter) and reported in `SearchResult.unmatched`: the
  course's semantic search still returned hotels for such phrases, and a bot can say what it ignored;
- results: by name similarity (when a name is given), then rating descending, then price ascending, then id
  (`order="database"` ranks by hotel_id instead: closer to the records the course's dialogues show).

Every query is parameterised SQL; no input text is ever part of the SQL string.
"""

from __future__ import annotations

import difflib
import math
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tooltune import paths
from tooltune.dialogue import HOTEL_TOOL
from tooltune.errors import InputError, ToolTuneError
from tooltune.datafiles.records import read_jsonl
from tooltune.facilities import FacilityMatcher, HAND_RULES, learn_paraphrases
from tooltune.hotels import RECORD_KEYS, load_hotels
from tooltune.schema import argument_problems

SCHEMA_VERSION = "1"
TRAIN_JSONL = f"{paths.COURSE_SPLIT}/train.chatglm3.jsonl"
"""Where the paraphrase table is learned from: the course's train split only (dev/test stay unseen)."""


class SearchError(InputError):
    """Arguments `search_hotels` cannot run with; the message is fit to show to the caller (a bot or a user).

    `fields` names every offending argument (the message already names them too).
    """

    def __init__(self, message: str, *fields: str):
        super().__init__(message, where="search_hotels")
        self.fields = fields


@dataclass(frozen=True)
class SearchResult:
    records: list[dict[str, Any]]
    """Hotels in the course's record form (name, type, address, subway, phone, facilities, price, rating, hotel_id)."""
    facilities: dict[str, str | None] = field(default_factory=dict)
    """Each facility phrase asked -> the database facility it was mapped to, or None."""
    unmatched: list[str] = field(default_factory=list)
    """Phrases that mapped to nothing; they were skipped, not used as filters."""


# ---- reading the course's search turns -------------------------------------------------------------------------------

def search_turns(path: str | Path) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], str]]:
    """(arguments, returned records, "file:line") of every `tool` turn of a course `*.chatglm3.jsonl` file."""
    for where, sample in read_jsonl(path):
        conversations = sample.get("conversations") if isinstance(sample, dict) else None
        if not isinstance(conversations, list):
            raise InputError("not a chatglm3 sample (no 'conversations' list)", where=where)
        for i, turn in enumerate(conversations):
            if isinstance(turn, dict) and turn.get("role") == "tool":
                args, records = turn.get("parameters"), turn.get("observation") or []
                if not isinstance(args, dict) or not isinstance(records, list):
                    raise InputError("a tool turn needs 'parameters' (object) and 'observation' (list)",
                                     where=where, field=f"conversations[{i}]")
                yield args, [r for r in records if isinstance(r, dict)], where


# ---- building --------------------------------------------------------------------------------------------------------

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE hotels (hotel_id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT, address TEXT, subway TEXT,
                     phone TEXT, price REAL, rating REAL);
CREATE TABLE hotel_facilities (hotel_id INTEGER NOT NULL REFERENCES hotels(hotel_id), position INTEGER NOT NULL,
                               facility TEXT NOT NULL, PRIMARY KEY (hotel_id, position));
CREATE INDEX hotel_facilities_by_name ON hotel_facilities (facility, hotel_id);
CREATE TABLE aliases (phrase TEXT PRIMARY KEY, facility TEXT NOT NULL, source TEXT NOT NULL);
"""


def _stamp(path: Path) -> str:
    """What decides staleness: size and modification time (cheap to check on every open)."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class BuildReport:
    path: Path
    hotels: int
    facilities: int
    learned_aliases: int
    hand_aliases: int
    train_source: str | None
    """The train file the aliases were learned from, or None when it was absent (hand rules only)."""
    dropped_aliases: int = 0
    """Learned aliases naming a facility this database lacks (they could filter nothing, so were not stored)."""


def _sources(data_dir: str | os.PathLike | None) -> tuple[Path, Path | None]:
    hotel_json = paths.data_file(paths.HOTEL_DB_JSON, data_dir)
    train = paths.data_dir(data_dir) / TRAIN_JSONL
    return hotel_json, (train if train.is_file() else None)


def build_db(out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> BuildReport:
    """Write the SQLite database (atomically: a reader never sees a half-built file) and say what went in."""
    out = Path(out) if out else default_path()
    hotel_json, train = _sources(data_dir)
    hotels = load_hotels(hotel_json)
    pairs = ((args.get("facilities") or [], records) for args, records, _ in (search_turns(train) if train else ()))
    learned = learn_paraphrases(pairs)
    canonical = dict.fromkeys(f for h in hotels for f in h["facilities"])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp)
        with con:
            con.executescript(_DDL)
            con.executemany("INSERT INTO hotels VALUES (?,?,?,?,?,?,?,?)",
                            [(h["hotel_id"], h["name"], h["type"], h["address"], h["subway"], h["phone"], h["price"],
                              h["rating"]) for h in hotels])
            con.executemany("INSERT INTO hotel_facilities VALUES (?,?,?)",
                            [(h["hotel_id"], i, f) for h in hotels for i, f in enumerate(h["facilities"])])
            # Learned aliases first; a hand rule only fills a phrase train never showed. Aliases naming a facility
            # the database lacks cannot filter anything, so they are not stored.
            aliases = {p: (f, "learned") for p, f in learned.items() if f in canonical}
            dropped = len(learned) - len(aliases)
            for p, f in HAND_RULES.items():
                if f in canonical:
                    aliases.setdefault(p, (f, "hand"))
            con.executemany("INSERT INTO aliases VALUES (?,?,?)", [(p, f, s) for p, (f, s) in aliases.items()])
            meta = {"schema": SCHEMA_VERSION, "data_dir": str(paths.data_dir(data_dir).resolve()),
                    "hotel_json": str(hotel_json.resolve()), "hotel_json_stamp": _stamp(hotel_json),
                    "train": str(train.resolve()) if train else "", "train_stamp": _stamp(train) if train else ""}
            con.executemany("INSERT INTO meta VALUES (?,?)", list(meta.items()))
        con.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    n_learned = sum(s == "learned" for _, s in aliases.values())
    return BuildReport(out, len(hotels), len(canonical), n_learned, len(aliases) - n_learned,
                       str(train) if train else None, dropped)


def _read_only_uri(path: Path) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def default_path() -> Path:
    return paths.cache_dir() / "hotels.sqlite"


def _read_meta(db: Path) -> dict[str, str] | None:
    try:
        con = sqlite3.connect(_read_only_uri(db), uri=True)
        try:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


def _stale_reason(db: Path, data_dir: str | os.PathLike | None) -> str | None:
    """Why `db` must be (re)built from `data_dir`, or None when it is current. Without source data an existing file
    is used as is."""
    if not db.is_file():
        return "missing"
    meta = _read_meta(db)
    if meta is None:  # never overwrite a file that is not ours (a mistyped --db)
        raise ToolTuneError(f"{db} is not a tooltune hotel database (no readable meta table); remove it or choose "
                            f"another path")
    if meta.get("schema") != SCHEMA_VERSION:
        return "older schema"
    try:
        hotel_json, train = _sources(data_dir)
    except ToolTuneError:
        return None
    if meta.get("hotel_json_stamp") != _stamp(hotel_json):
        return f"{hotel_json} changed"
    if meta.get("train_stamp", "") != (_stamp(train) if train else ""):
        return "train dialogues changed"
    return None


# ---- searching -------------------------------------------------------------------------------------------------------

def _number(args: dict[str, Any], key: str) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if not math.isfinite(value):
        raise SearchError(f"{key}: {value} is not a finite number", key)
    return float(value)


# Bounds on what a search may ask, far above anything real (the longest of the 1133 names has 33 characters, the
# most facilities a hotel has is 27 of 37, the highest price 10531) and low enough that any search answers in
# milliseconds: a 1 MB name took 34 s in `name_similarity`, 1000 distinct characters overflowed SQLite's expression
# depth, a price of 400 digits cannot become a float.
MAX_NAME = 50
"""Most characters in `name`."""
MAX_FACILITIES = 40
"""Most phrases in `facilities`."""
MAX_PHRASE = 50
"""Most characters in one facility phrase."""
MAX_PRICE = 1_000_000
"""Highest price bound (yuan a night)."""


def _digits(value: int) -> int:
    # str() refuses integers of over 4300 digits; log10 is exact enough there, and not near powers of ten below
    return len(str(abs(value))) if value.bit_length() < 14_000 else int(math.log10(abs(value))) + 1


def _check_bounds(args: dict[str, Any]) -> None:
    name = args.get("name")
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise SearchError(f"name: {len(name)} characters; a hotel name has at most {MAX_NAME}", "name")
    phrases = args.get("facilities")
    if isinstance(phrases, list):
        if len(phrases) > MAX_FACILITIES:
            raise SearchError(f"facilities: {len(phrases)} phrases; at most {MAX_FACILITIES}", "facilities")
        for i, phrase in enumerate(phrases):
            if isinstance(phrase, str) and len(phrase) > MAX_PHRASE:
                raise SearchError(f"facilities[{i}]: {len(phrase)} characters; a facility phrase has at most "
                                  f"{MAX_PHRASE}", "facilities")
    for key, top in (("price_range_lower", MAX_PRICE), ("price_range_upper", MAX_PRICE),
                     ("rating_range_lower", 5), ("rating_range_upper", 5)):
        value = args.get(key)
        # compared before any float(): a 400-digit integer compares fine but overflows a float; NaN fails both
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= top:
            shown = (f"{value:g}" if isinstance(value, float) else str(value) if abs(value) < 10**12
                     else f"an integer of {_digits(value)} digits")
            raise SearchError(f"{key}: {shown} is outside 0 to {top:,}", key)


def check_arguments(args: Any) -> dict[str, Any]:
    """The arguments if `search_hotels` can run with them; else a `SearchError` naming every problem.

    Beyond the tool's schema, every input is bounded (`MAX_NAME`, `MAX_FACILITIES`, `MAX_PHRASE`, `MAX_PRICE`,
    ratings 0 to 5), so that a search answers in milliseconds whatever it is asked."""
    if isinstance(args, dict):
        _check_bounds(args)
    problems = argument_problems(HOTEL_TOOL, args)
    if problems:
        keys = [p.split(":", 1)[0].split("[", 1)[0] for p in problems] if isinstance(args, dict) else []
        raise SearchError("; ".join(problems), *dict.fromkeys(keys))
    for what in ("price", "rating"):
        lo, hi = _number(args, f"{what}_range_lower"), _number(args, f"{what}_range_upper")
        if lo is not None and hi is not None and lo > hi:
            raise SearchError(f"{what}_range_lower {lo:g} is above {what}_range_upper {hi:g}",
                              f"{what}_range_lower", f"{what}_range_upper")
    if "name" in args and not args["name"].strip():
        raise SearchError("name: an empty name matches every hotel; leave 'name' out instead", "name")
    for i, phrase in enumerate(args.get("facilities", [])):
        if not phrase.strip():
            raise SearchError(f"facilities[{i}]: an empty facility phrase", "facilities")
    return args


# How hotels are ranked after name similarity; a row is (hotel_id, name, type, address, subway, phone, price, rating).
ORDERS: dict[str, Any] = {
    "rating": lambda r: (-(r[7] or 0.0), math.inf if r[6] is None else r[6], r[0]),
    # bench/db_recall.py: the course's first record is the database's first match 2-3 times as often this way.
    "database": lambda r: (r[0],),
}


def name_similarity(query: str, name: str) -> float:
    return difflib.SequenceMatcher(None, query, name).ratio()


class HotelDB:
    """A read-only handle on the SQLite file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        con = self._connection()
        self.facility_names: tuple[str, ...] = tuple(r[0] for r in con.execute(
            "SELECT facility FROM hotel_facilities GROUP BY facility ORDER BY MIN(hotel_id * 1000 + position)"))
        # Every hotel's facilities, read once (about 15k rows): a record then costs no query.
        self._facilities: dict[int, list[str]] = {}
        for hotel_id, facility in con.execute("SELECT hotel_id, facility FROM hotel_facilities "
                                              "ORDER BY hotel_id, position"):
            self._facilities.setdefault(hotel_id, []).append(facility)
        aliases = dict(con.execute("SELECT phrase, facility FROM aliases WHERE source = 'learned'").fetchall())
        hand = dict(con.execute("SELECT phrase, facility FROM aliases WHERE source = 'hand'").fetchall())
        self.matcher = FacilityMatcher(self.facility_names, aliases, hand_rules=hand)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> "HotelDB":
        """Open the database at `path` (default `cache_dir()/hotels.sqlite`), building it first if it is missing
        or older than its sources in `data_dir`."""
        db = Path(path) if path else default_path()
        if db.exists() and not db.is_file():
            raise InputError("not a database file (a directory?)", where=str(db), field="--db")
        if data_dir is None and db.is_file():
            # Without an explicit data dir, a file keeps the data dir it was built from (a test's or a user's copy).
            data_dir = (_read_meta(db) or {}).get("data_dir") or None
            if data_dir is not None and not Path(data_dir).is_dir():
                data_dir = None
        if _stale_reason(db, data_dir) is not None:
            build_db(db, data_dir)
        return cls(db)

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(_read_only_uri(self.path), uri=True)
            self._local.con = con
        return con

    def known_values(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(key, values) of `search_hotels` arguments that this database names: its facilities and hotel names,
        what a copied call may hold besides the user's own words (`GenerationConfig.copy_values`)."""
        names = tuple(r[0] for r in self._connection().execute("SELECT name FROM hotels ORDER BY hotel_id"))
        return (("facilities", self.facility_names), ("name", names))

    def map_facilities(self, phrases: list[str]) -> dict[str, str | None]:
        return {p: self.matcher.match(p) for p in phrases}

    def search(self, arguments: dict[str, Any], limit: int = 3, order: str = "rating") -> SearchResult:
        """The hotels matching `arguments` (the `search_hotels` schema), best first, at most `limit`.

        `order` (a key of `ORDERS`) ranks hotels after name similarity: "rating" (rating descending, then price
        ascending) or "database" (hotel_id, the order CrossWOZ's wizards saw, which the course's records follow).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SearchError(f"limit must be a positive integer, got {limit!r}", "limit")
        if order not in ORDERS:
            raise SearchError(f"order must be one of {', '.join(ORDERS)}, got {order!r}", "order")
        args = check_arguments(arguments)
        mapped = self.map_facilities(list(args.get("facilities", [])))
        sql, params = ["SELECT hotel_id, name, type, address, subway, phone, price, rating FROM hotels WHERE 1=1"], []
        for key, op, column in (("price_range_lower", ">=", "price"), ("price_range_upper", "<=", "price"),
                                ("rating_range_lower", ">=", "rating"), ("rating_range_upper", "<=", "rating")):
            if key in args:  # a NULL price fails every comparison: no-price hotels go only when a bound is given
                sql.append(f"AND {column} {op} ?")
                params.append(float(args[key]))
        if "type" in args:
            sql.append("AND type = ?")
            params.append(args["type"])
        for facility in dict.fromkeys(f for f in mapped.values() if f is not None):
            sql.append("AND hotel_id IN (SELECT hotel_id FROM hotel_facilities WHERE facility = ?)")
            params.append(facility)
        for ch in dict.fromkeys(args.get("name", "")):
            sql.append("AND instr(name, ?) > 0")
            params.append(ch)
        rows = self._connection().execute(" ".join(sql), params).fetchall()
        query = args.get("name")
        then = ORDERS[order]
        rows.sort(key=lambda r: (-name_similarity(query, r[1]) if query else 0.0, *then(r)))
        records = [self._record(r) for r in rows[:limit]]
        return SearchResult(records, mapped, [p for p, f in mapped.items() if f is None])

    def _record(self, row: tuple) -> dict[str, Any]:
        hotel_id, name, type_, address, subway, phone, price, rating = row
        facilities = list(self._facilities.get(hotel_id, ()))
        rec = {"name": name, "type": type_, "address": address, "subway": subway, "phone": phone,
               "facilities": facilities, "price": price, "rating": rating, "hotel_id": hotel_id}
        return {k: rec[k] for k in RECORD_KEYS}

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

"""`data build`, top to bottom: extract -> augment -> (rewrite) -> clean -> split -> leakage -> write + report.

Output (`BuildConfig.out`): `{train,dev,test}.jsonl` (seed format, one dialogue a line: a JSON list of turns),
`report.md`, `balance.png`. The same inputs and seed give byte-identical files (without LLM rewriting).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tooltune import jsonio, paths
from tooltune.dataset import crosswoz
from tooltune.dataset.augment import AugmentConfig, augment, paraphrase_table
from tooltune.dataset.clean import CleanConfig, clean, remove_leakage
from tooltune.dataset.exclude import item_texts, remove_overlap, user_texts
from tooltune.dataset.items import Item, Removed
from tooltune.dataset.llm import LLMConfig, make_client, rewrite_items
from tooltune.dataset.report import plot_balance, render_markdown, seed_json, split_stats
from tooltune.dataset.split import stratified_split, stratum
from tooltune.errors import InputError, ToolTuneError
from tooltune.facilities import HAND_RULES, learn_paraphrases
from tooltune.hotels import load_hotels

DIALOG_JSON = "hotel/agiclass_hotel_chatbot/dialog.json"
CROSSWOZ_ZIPS = tuple(f"crosswoz/{s}.json.zip" for s in ("train", "val", "test"))
COURSE_RAW = "hotel/raw"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class BuildConfig:
    """Everything `data build` needs."""

    out: Path
    """Directory written: {train,dev,test}.jsonl, report.md, balance.png."""
    seed: int = 0
    """Seeds augmentation and the split; same seed, same bytes."""
    data_dir: str | None = None
    """The data dir (default: `tooltune.paths.data_dir()`)."""
    use_dialog_json: bool = True
    """Read the course's hotel sub-dialogues of CrossWOZ train (`hotel/agiclass_hotel_chatbot/dialog.json`)."""
    use_zips: bool = True
    """Read whichever of `crosswoz/{train,val,test}.json.zip` the data dir has."""
    limit: int | None = None
    """Read only the first N dialogues of each source (quick builds, tests)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Which augmentations run."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """How duplicates are recognised."""
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """train : dev : test."""
    llm: LLMConfig | None = None
    """Rewrite some user turns with an OpenAI-compatible endpoint; None: off."""
    tokenizer: str | None = None
    """A local tokenizer dir (transformers) for token lengths in the report; None: count characters."""
    exclude: tuple[Path, ...] = ()
    """JSON-lines files (seed, chatglm3, llama2) whose user sentences no built dialogue may contain, e.g. the
    course's test set when the build is for training a model evaluated on it (see `tooltune.dataset.exclude`)."""

    def __post_init__(self) -> None:
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or sum(self.ratios) <= 0:
            raise ToolTuneError(f"split ratios must be three non-negative numbers, got {self.ratios}")
        if self.limit is not None and self.limit < 1:
            raise ToolTuneError(f"--limit must be >= 1, got {self.limit}")
        if not (self.use_dialog_json or self.use_zips):
            raise ToolTuneError("no source left: both dialog.json and the CrossWOZ zips are switched off")


def extract(root: Path, hotels: dict[str, dict[str, Any]], config: BuildConfig,
            ) -> tuple[list[Item], list[Removed], dict[str, int]]:
    items: list[Item] = []
    removed: list[Removed] = []
    sources: dict[str, int] = {}
    todo = ([(DIALOG_JSON, crosswoz.load_dialog_json)] if config.use_dialog_json else []) + (
        [(z, crosswoz.load_crosswoz_zip) for z in CROSSWOZ_ZIPS if (root / z).exists()] if config.use_zips else [])
    if config.use_dialog_json and not (root / DIALOG_JSON).exists():
        raise ToolTuneError(f"missing {root / DIALOG_JSON}: run `tooltune data fetch`, pass --data-dir, "
                             "or build from the zips alone with --no-dialog-json")
    if not todo:
        raise ToolTuneError(f"no CrossWOZ dialogue file under {root}: run `tooltune data fetch` or pass --data-dir")
    loaded: dict[str, list[Item]] = {}
    for source, load in todo:
        got, lost = load(root / source, hotels, source, config.limit)
        loaded[source] = got
        removed += lost
        sources[source] = len(got)
    train_zip = CROSSWOZ_ZIPS[0]
    if DIALOG_JSON in loaded and train_zip in loaded:
        # dialog.json was cut from CrossWOZ train: its sub-dialogues are the train zip's hotel parts again.
        loaded[DIALOG_JSON], same = remove_overlap(loaded[DIALOG_JSON], item_texts(loaded[train_zip]),
                                                   reason=f"also in {train_zip}")
        removed += same
    items = [item for got in loaded.values() for item in got]
    return items, removed, sources


def course_paraphrases(root: Path) -> dict[str, str]:
    """phrase -> canonical facility learned from the course's train dialogues (raw seeds the split map puts in train).

    Only train: phrases first seen in the course's dev/test must not reach a training set built for comparison.
    Without the course's raw files: an empty table (the hand rules still apply).
    """
    split_map = root / COURSE_RAW / "split_map.json"
    if not split_map.exists():
        return {}
    content = jsonio.read_json(split_map)
    where = content.get("map") if isinstance(content, dict) else None
    if not isinstance(where, dict) or not all(isinstance(v, str) for v in where.values()):
        raise InputError("expected a JSON object with a 'map' of file -> split", where=str(split_map))
    pairs = []
    for name, split in sorted(where.items()):
        path = root / COURSE_RAW / "enhanced_hotel_data" / name
        if not split.startswith("train") or not path.exists():
            continue
        turns = jsonio.read_json(path)
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise InputError("expected a seed dialogue (a JSON list of turns)", where=str(path))
        for t, nxt in zip(turns, turns[1:]):
            if t.get("role") == "search" and nxt.get("role") == "return":
                args = t.get("arguments")
                pairs.append(((args.get("facilities") if isinstance(args, dict) else None) or [],
                              nxt.get("records") or []))
    return learn_paraphrases(pairs)


def token_counter(tokenizer: str | None) -> Callable[[str], int] | None:
    """Token counts from a local tokenizer dir: its `tokenizer.json` via `tokenizers` (fast to load), else
    transformers' AutoTokenizer (slow tokenizers)."""
    if tokenizer is None:
        return None
    path = Path(tokenizer)
    if not path.is_dir():
        raise ToolTuneError(f"--tokenizer {tokenizer} is not a directory (a local tokenizer dir is expected)")
    try:
        if (path / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            fast = Tokenizer.from_file(str(path / "tokenizer.json"))
            return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # tokenizers and transformers raise many types for a broken dir; all mean "unusable"
        raise ToolTuneError(f"cannot load the tokenizer {tokenizer}: {e}") from None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def build(config: BuildConfig) -> dict[str, Any]:
    """Run the whole build; returns a summary (split sizes, counts) for the CLI to print."""
    root = paths.data_dir(config.data_dir)
    hotel_list = load_hotels(paths.data_file(paths.HOTEL_DB_JSON, config.data_dir))
    hotels = {h["name"]: h for h in hotel_list}
    held_out = user_texts(config.exclude)  # first: a bad --exclude file fails before any work
    items, removed, sources = extract(root, hotels, config)
    items, overlap = remove_overlap(items, held_out)  # before paraphrasing changes the users' words
    removed += overlap
    # Duplicates among the sources go before augmentation: augmented differently, they would no longer match.
    items, dropped = clean(items, config.clean)
    removed += dropped
    counts: Counter = Counter()
    table = paraphrase_table(course_paraphrases(root) if config.augment.paraphrase else {}, HAND_RULES)
    items, augmented = augment(items, hotel_list, table, config.augment, config.seed)
    counts.update(augmented)
    if config.llm is not None:
        items, rewritten = rewrite_items(items, make_client(config.llm), config.llm, config.seed)
        counts.update(rewritten)
    items, overlap = remove_overlap(items, held_out)  # the generated dialogues, and any rewrite that matches
    removed += overlap
    items, dropped = clean(items, config.clean)  # again: the generated dialogues and anything augmentation broke
    removed += dropped
    parts = stratified_split(items, stratum, config.ratios, config.seed)
    splits, leaked = remove_leakage(dict(zip(SPLITS, parts)), config.clean)
    removed += leaked
    write_outputs(config, splits, sources, counts, removed)
    return {"splits": {k: len(v) for k, v in splits.items()}, "sources": sources, "augmented": dict(counts),
            "removed": dict(Counter(r.reason for r in removed if not r.kept)),
            "shortened": sum(r.kept for r in removed)}


def write_outputs(config: BuildConfig, splits: dict[str, list[Item]], sources: dict[str, int], counts: Counter,
                  removed: list[Removed]) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in splits.items():
        jsonio.atomic_write_text(out / f"{name}.jsonl", "".join(seed_json(i) + "\n" for i in items))
    count_tokens = token_counter(config.tokenizer)
    stats = {name: split_stats(items, count_tokens) for name, items in splits.items()}
    settings = {"seed": config.seed, "limit": config.limit, "ratios": "/".join(f"{r:g}" for r in config.ratios),
                "p": config.augment.p, "paraphrase": config.augment.paraphrase, "qa": config.augment.qa,
                "closing": config.augment.closing, "named": config.augment.named,
                "price_upper": config.augment.price_upper, "threshold": config.clean.threshold,
                "ngram": config.clean.ngram, "llm": config.llm.model if config.llm else None,
                "exclude": ",".join(Path(p).name for p in config.exclude) or None}
    report = render_markdown(stats, sources, counts, removed, settings, "tokens" if config.tokenizer else "chars")
    jsonio.atomic_write_text(out / "report.md", report)
    plot_balance(stats, out / "balance.png")

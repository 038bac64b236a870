"""`tooltune data build`: CrossWOZ -> cleaned, augmented, split hotel dialogues in the seed format + a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tooltune.dataset.augment import AugmentConfig
from tooltune.dataset.clean import CleanConfig
from tooltune.dataset.llm import LLMConfig
from tooltune.dataset.pipeline import BuildConfig, build
from tooltune.errors import InputError

HELP = "build train/dev/test hotel dialogues (seed format) from CrossWOZ, with augmentation, cleaning and a report"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output dir: {train,dev,test}.jsonl, report.md, "
                                                                 "balance.png")
    parser.add_argument("--seed", type=int, default=0, help="seed of augmentation and split (default 0)")
    parser.add_argument("--data-dir", help="data dir (default: $TOOLTUNE_DATA, ../shared/data, the cache)")
    parser.add_argument("--limit", type=int, help="read only the first N dialogues of each source (quick builds)")
    parser.add_argument("--no-dialog-json", action="store_true", help="skip hotel/agiclass_hotel_chatbot/dialog.json")
    parser.add_argument("--no-zips", action="store_true", help="skip crosswoz/*.json.zip")
    parser.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    parser.add_argument("--no-paraphrase", action="store_true", help="no colloquial facility phrasing")
    parser.add_argument("--no-qa", action="store_true", help="no extra questions about a returned hotel")
    parser.add_argument("--no-closing", action="store_true", help="no closing turns")
    parser.add_argument("--augment-p", type=float, default=0.3, help="probability of each per-dialogue augmentation")
    parser.add_argument("--named", type=int, default=200, help="extra dialogues querying a hotel by name")
    parser.add_argument("--price-upper", type=int, default=200, help="extra dialogues querying a price upper bound")
    parser.add_argument("--near-threshold", type=float, default=0.9,
                        help="character 3-gram Jaccard at or above which dialogues are near duplicates")
    parser.add_argument("--ratios", default="8:1:1", help="train:dev:test (default 8:1:1)")
    parser.add_argument("--exclude", action="append", type=Path, default=[],
                        help="JSON-lines file (seed/chatglm3/llama2) whose user sentences must not occur in the "
                             "build, e.g. the course's test.chatglm3.jsonl (repeatable)")
    parser.add_argument("--tokenizer", help="local tokenizer dir for token lengths in the report")
    parser.add_argument("--llm-base-url", help="rewrite some user turns with this OpenAI-compatible endpoint")
    parser.add_argument("--llm-model", help="model name for --llm-base-url")
    parser.add_argument("--llm-p", type=float, default=0.3, help="share of search-starting user turns to rewrite")


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise InputError(f"expected three numbers like 8:1:1, got {text!r}", field="--ratios")
    return parts  # type: ignore[return-value]


def config_from_args(args: argparse.Namespace):
    if bool(args.llm_base_url) != bool(args.llm_model):
        raise InputError("--llm-base-url and --llm-model go together", field="--llm-model")
    off = args.no_augment
    try:
        augment = AugmentConfig(paraphrase=not (off or args.no_paraphrase), qa=not (off or args.no_qa),
                                closing=not (off or args.no_closing), p=args.augment_p,
                                named=0 if off else args.named, price_upper=0 if off else args.price_upper)
        clean = CleanConfig(threshold=args.near_threshold)
    except ValueError as e:
        raise InputError(str(e)) from None
    llm = LLMConfig(args.llm_base_url, args.llm_model, p=args.llm_p) if args.llm_base_url else None
    return BuildConfig(out=args.out, seed=args.seed, data_dir=args.data_dir, use_dialog_json=not args.no_dialog_json,
                       use_zips=not args.no_zips, limit=args.limit, augment=augment, clean=clean,
                       ratios=_ratios(args.ratios), llm=llm, tokenizer=args.tokenizer,
                       exclude=tuple(args.exclude))


def run(args: argparse.Namespace) -> int:
    summary = build(config_from_args(args))
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}/{{train,dev,test}}.jsonl, report.md, balance.png")
    return 0

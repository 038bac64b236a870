"""The course train split plus the raw pool's "unused" dialogues, for the "more training data" lever (issue 7).

    python bench/extra_data.py --out runs/data/train-plus-unused.chatglm3.jsonl [--data DIR]

The pool is `bench/active_learning.py`'s (`raw/split_map.json` "unused", exact duplicates of dev/test and repeats
removed, and held out as `data build --exclude` does: a pool dialogue is dropped when one of its user sentences
(normalised, 8 characters or more) is a user sentence of dev or test). Written in the course's chatglm3
format after the train split's dialogues; the counts are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_learning import unused_pool  # noqa: E402

from tooltune.datafiles import read_dialogues, write_dialogues  # noqa: E402
from tooltune.paths import data_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, help="the shared data folder (default: tooltune's data lookup)")
    args = parser.parse_args()
    root = data_dir(args.data)
    split = root / "hotel" / "v3_chatglm3_llama2"
    pool, counts = unused_pool(root)
    train = read_dialogues(split / "train.chatglm3.jsonl")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_dialogues(train + pool, args.out, "chatglm3")
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {len(train)} train + {len(pool)} unused = {len(train) + len(pool)} dialogues to {args.out}")


if __name__ == "__main__":
    main()

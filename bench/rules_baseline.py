"""The rules-and-retrieval baseline on a course split: fit on train, predict every unit, score with the course metrics.

    PYTHONPATH=src python bench/rules_baseline.py --split dev --out runs/rules-dev

writes OUT/predictions.jsonl (rows `{"id", "gold", "pred", "raw"}`) and OUT/metrics.json (`tooltune.evaluate.score`),
and prints the lecture-table row. Choose settings on dev; run test once per configuration you report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tooltune.baseline import RulesModel, split_units
from tooltune.dialogue import Call, turn_to_seed
from tooltune.errors import ToolTuneError
from tooltune.evaluate.predictions import Row, write_predictions
from tooltune.evaluate.score import score


def raw_text(turn) -> str:
    """What a generating model would have written: the call's JSON, or the reply."""
    if isinstance(turn, Call):
        return json.dumps(turn_to_seed(turn), ensure_ascii=False)
    return turn.content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--out", required=True, help="run directory to write predictions.jsonl and metrics.json into")
    parser.add_argument("--data-dir", default=None, help="data dir (default: $TOOLTUNE_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    try:
        start = time.time()
        model = RulesModel.trained(args.data_dir)
        units = split_units(args.split, args.data_dir)
        rows = []
        for unit in units:
            pred = model.predict(unit.history)
            rows.append(Row(unit.id, unit.gold, pred, raw_text(pred)))
    except ToolTuneError as e:
        print(f"rules_baseline: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_predictions(out / "predictions.jsonl", rows)
    metrics = score(rows)
    metrics["seconds"] = round(time.time() - start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"| rules + retrieval | none (no network) | {metrics['bleu4']:.2f} | {metrics['slot_p']:.2f} | "
          f"{metrics['slot_r']:.2f} | {metrics['slot_f1']:.2f} |  ({args.split}, {len(rows)} units, "
          f"{metrics['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

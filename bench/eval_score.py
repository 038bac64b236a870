"""How long scoring the course's 560 test units takes, and what two trivial predictors score.

Run from the repo root: `PYTHONPATH=src python bench/eval_score.py` (writes bench/results/eval.md).
Predictors: the gold itself (an upper bound: every metric 100) and "gold calls, every reply 好的" (what a bot
that always says OK scores on BLEU-4). Times are wall-clock on this machine, best of 5, imports and jieba's
dictionary load done once beforehand (they are reported separately).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
from tooltune.evaluate import score as score_module  # noqa: E402  (timed: nltk import)
T_IMPORT = time.perf_counter() - T0

from tooltune.dialogue import Assistant, turn_from_seed  # noqa: E402
from tooltune.evaluate.predictions import Row  # noqa: E402
from tooltune.paths import COURSE_SPLIT, data_file  # noqa: E402

OUT = Path(__file__).parent / "results" / "eval.md"
COMMAND = "PYTHONPATH=src python bench/eval_score.py"


def test_rows() -> list[Row]:
    path = data_file(f"{COURSE_SPLIT}/test.llama2.jsonl")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        gold = turn_from_seed(json.loads(json.loads(line)["response"]), f"{path}:{number}")
        rows.append(Row(f"test:{number}", gold, gold, ""))
    return rows


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    gold = test_rows()
    ok = [Row(r.id, r.gold, Assistant("好的") if isinstance(r.gold, Assistant) else r.pred, "") for r in gold]
    start = time.perf_counter()
    score_module.rouge_jieba(gold[:1] + [r for r in gold if isinstance(r.gold, Assistant)][:1])
    t_jieba = time.perf_counter() - start
    search = score_module.hoteldb_search(str(Path(tempfile.mkdtemp()) / "hotels.sqlite"))

    timings = {
        "course metrics only (`course_metrics`)": best_of(lambda: score_module.course_metrics(gold)),
        "`score(rows, rouge=False)` (+ per-key, turn types, valid calls)": best_of(
            lambda: score_module.score(gold, rouge=False)),
        "`score(rows)` (+ ROUGE on jieba words)": best_of(lambda: score_module.score(gold)),
        "`score(rows, search=db)` (+ task success: one SQLite search per distinct argument set)": best_of(
            lambda: score_module.score(gold, search=search)),
    }
    results = {name: score_module.score(rows, search=search) for name, rows in
               (("gold as prediction", gold), ("gold calls, every reply 好的", ok))}

    lines = [f"# Evaluation: scoring speed and trivial baselines (`{COMMAND}`)", "",
             f"560 test units (242 calls, 318 replies), {sys.platform}, Python {sys.version.split()[0]}.", "",
             f"One-off costs: importing the scorer (nltk) {T_IMPORT:.2f} s; first ROUGE call (jieba dictionary) "
             f"{t_jieba:.2f} s.", "", "| what | seconds (best of 5) |", "| --- | ---: |"]
    lines += [f"| {name} | {t:.3f} |" for name, t in timings.items()]
    lines += ["", "| predictor | BLEU-4 | SLOT-P | SLOT-R | SLOT-F1 | ROUGE-L (jieba) | valid calls | task success |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['bleu4']:.2f} | {m['slot_p']:.2f} | {m['slot_r']:.2f} | {m['slot_f1']:.2f} | "
                     f"{m['rouge_jieba']['rouge-l']:.2f} | {m['valid_calls']['rate']:.2f} | "
                     f"{m['task_success']['rate']:.2f} |")
    ts = results["gold as prediction"]["task_success"]
    lines += ["", f"Task success uses limit {ts['limit']}; {ts['gold_found_nothing']} of {ts['judged']} gold calls "
              "find no hotel in the local database (an empty result matched by an empty result counts as success)."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

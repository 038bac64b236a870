"""Where a run leaves out an argument: the next-token probabilities at the point its call closed.

For every turn unit whose gold call has KEY and whose predicted call lacks it, the prediction is cut before its
closing brace and the model's next-token distribution there is printed: the closing newline against the comma that
would lead to another key. Run: PYTHONPATH=src python bench/type_probe.py RUN EVAL_DIR --data DEV_FILE [--key type]
(EVAL_DIR: what `tooltune eval RUN --data DEV_FILE --out EVAL_DIR` wrote; llama2's JSON call layout assumed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tooltune.evaluate.units import eval_units
from tooltune.datafiles import read_dialogues
from tooltune.formats import get_format
from tooltune.inference import Generator
from tooltune.runs import load_for_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("eval_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--key", default="type")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()

    loaded = load_for_inference(args.run)
    tok = loaded.tokenizer
    gen = Generator(loaded.model, tok, get_format(loaded.format), config=loaded.generation())
    units = {u.id: u for u in eval_units(read_dialogues(args.data), split=Path(args.data).name.split(".")[0])}
    for line in (Path(args.eval_dir) / "predictions.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        gold, pred = row["gold"].get("arguments"), (row["pred"] or {}).get("arguments")
        if gold is None or pred is None or args.key not in gold or args.key in pred:
            continue
        body = row["raw"].rstrip().removesuffix("}").rstrip()
        unit = units[row["id"]]
        ids = gen.prompt_ids(unit.history, unit.tools) + tok(body, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            probs = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
        top = probs.topk(args.top)
        shown = ", ".join(f"{tok.decode([int(i)])!r} {float(p):.3f}" for p, i in zip(top.values, top.indices))
        print(f"{row['id']}: gold {args.key}={gold[args.key]!r}; after {body[-24:]!r}: {shown}")


if __name__ == "__main__":
    main()

"""Turn a finished run into a run directory that can live in the repository (bench/artifacts/NAME).

    python bench/g7_artifact.py runs/g7 bench/artifacts/g7 [--alias gemma3-270m]

What is kept: the adapter (as bfloat16 safetensors: half the bytes; what `tooltune eval` then scores is this file),
adapter_config.json, config.yaml, run.json, log.jsonl, loss.png and wall_s. What changes: every path that named this
machine. The base becomes its alias (loaded from where `tooltune model prepare ALIAS` writes it), the data files
become paths relative to the data dir (`hotel/v3_chatglm3_llama2/...`), `model.dtype` becomes `auto` (bf16 only
where it is native) and `train.out` the artifact's own path. The tokenizer is not copied (the base's, 33 MB): the
run must have added no token. Any absolute path left in a text file is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tooltune import rundir  # noqa: E402
from tooltune.train.config import replace  # noqa: E402

COURSE = "hotel/v3_chatglm3_llama2"
KEEP = (rundir.LOG, rundir.LOSS_PLOT, "wall_s")


def data_relative(path: str) -> str:
    """`.../shared/data/hotel/v3_chatglm3_llama2/x.jsonl` -> `hotel/v3_chatglm3_llama2/x.jsonl`."""
    if not path:
        return path
    marker = path.find(COURSE)
    if marker < 0:
        raise SystemExit(f"{path}: not a file of the course split; the artifact can only name data-dir files")
    return path[marker:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--alias", default="gemma3-270m")
    args = parser.parse_args()
    run, out = args.run, args.out
    info = rundir.read_info(run)
    if info.new_special_tokens:
        raise SystemExit(f"{run} added {info.new_special_tokens} tokens: its tokenizer would have to ship too")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    weights = load_file(run / rundir.ADAPTER_WEIGHTS)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, out / rundir.ADAPTER_WEIGHTS,
              metadata={"format": "pt"})
    adapter = json.loads((run / rundir.ADAPTER_CONFIG).read_text(encoding="utf-8"))
    adapter["base_model_name_or_path"] = args.alias
    (out / rundir.ADAPTER_CONFIG).write_text(json.dumps(adapter, indent=2) + "\n", encoding="utf-8")
    cfg = rundir.read_config(run)
    cfg = replace(cfg, model={"path": args.alias, "dtype": "auto"}, train={"out": out.as_posix()},
                  data={"train": data_relative(cfg.data.train), "dev": data_relative(cfg.data.dev)})
    rundir.write_config(out, cfg)
    info = dataclasses.replace(info, base_model=args.alias, artifact={
        "from": run.name, "adapter_dtype": "bfloat16", "trained_dtype": info.dtype,
        "tokenizer": "the base's (no token added)"})
    rundir.write_info(out, info)
    for name in KEEP:
        if (run / name).is_file():
            shutil.copy(run / name, out / name)
    for path in out.iterdir():
        if path.suffix in (".json", ".yaml", ".jsonl") or path.name == "wall_s":
            text = path.read_text(encoding="utf-8")
            for needle in (str(Path.home()), "/root/", "/home/", "/tmp/", "/work/"):
                if needle in text:
                    raise SystemExit(f"{path} still names a machine path ({needle})")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out}: {len(list(out.iterdir()))} files, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

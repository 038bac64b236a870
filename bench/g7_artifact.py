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
import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

COURSE = "hotel/v3_chatglm3_llama2"
KEEP = ("log.jsonl", "loss.png", "wall_s")


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
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    if info.get("new_special_tokens"):
        raise SystemExit(f"{run} added {info['new_special_tokens']} tokens: its tokenizer would have to ship too")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    weights = load_file(run / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, out / "adapter_model.safetensors",
              metadata={"format": "pt"})
    adapter = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    adapter["base_model_name_or_path"] = args.alias
    (out / "adapter_config.json").write_text(json.dumps(adapter, indent=2) + "\n", encoding="utf-8")
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["model"]["path"], cfg["model"]["dtype"] = args.alias, "auto"
    cfg["data"]["train"], cfg["data"]["dev"] = data_relative(cfg["data"]["train"]), data_relative(cfg["data"]["dev"])
    cfg["train"]["out"] = out.as_posix()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    info["base_model"] = args.alias
    info["artifact"] = {"from": run.name, "adapter_dtype": "bfloat16",
                        "trained_dtype": info.get("dtype"), "tokenizer": "the base's (no token added)"}
    (out / "run.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
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

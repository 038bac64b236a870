"""GGUF export of a run, measured: size, export time, and how far the file's logits (loaded back by transformers,
`gguf_file=`) are from the merged Hugging Face model's, per quantisation, on course prompts.

    python bench/export_gguf.py bench/artifacts/g7 --out-dir /tmp/g7-gguf --results bench/results/export_gguf.md

With `--llama-cpp PYTHON LIB_DIR` llama.cpp itself runs on each file too (bench/llama_cpp_logits.py says how to
get it): its tokenization of the prompts' text and its logits on the same ids.

The prompts: the run's chat format (G7: llama2, compact observations, schema argument order) over the first
`--dialogues` course seed dialogues, one prompt per turn that the model answers (a user or result turn before it),
the last `--positions` positions of each scored. The reference is the merged model in float32 (the LoRA update
added in float32, as the export does before rounding). Also checked: the exported tokenizer metadata against the
GGUF the base was prepared from, where that file is on this machine (`tooltune-prepared.json` names it).
The .gguf files stay in --out-dir (never commit them).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tooltune import paths, rundir  # noqa: E402
from tooltune.dialogue import Call, Result, User, dialogue_from_seed, with_argument_order  # noqa: E402
from tooltune.formats import BOS, EOS, encode, get_format  # noqa: E402
from tooltune.formats.runtimes import runtime_for  # noqa: E402
from tooltune.train.gguf_export import export_gguf  # noqa: E402
from tooltune.train.export import merged_model  # noqa: E402

from shown import command as shown_command  # noqa: E402  (bench/ is the script's own folder)

def prompts(run: Path, tokenizer, dialogues: int) -> tuple[list[list[int]], list[str], list[tuple]]:
    """(the ids of each prompt as the run encodes it, its text without the leading bos, its (turns, tools))."""
    cfg = rundir.read_config(run)
    fmt = get_format(cfg.data.format).for_tokenizer(tokenizer)
    files = sorted(glob.glob(str(paths.data_dir() / "hotel/raw/enhanced_hotel_data/*.json")))[:dialogues]
    out, texts, histories = [], [], []
    for path in files:
        dialogue = with_argument_order(dialogue_from_seed(json.loads(Path(path).read_text(encoding="utf-8")),
                                                          where=path), cfg.data.argument_order)
        for k in range(1, len(dialogue.turns)):
            if isinstance(dialogue.turns[k - 1], (User, Result)):  # the model speaks next
                segments = fmt.prompt(dialogue.turns[:k], dialogue.tools, observation=cfg.data.observation)
                out.append(encode(segments, tokenizer).input_ids)
                texts.append("".join(tokenizer.eos_token if seg.special and seg.text == EOS else seg.text
                                     for seg in segments if not (seg.special and seg.text == BOS)))
                histories.append((dialogue.turns[:k], dialogue.tools))
    return out, texts, histories


def logits(model, ids: list[int], positions: int) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), logits_to_keep=positions).logits[0].float()


def tokenizer_check(base: Path, exported: Path) -> list[str]:
    """One line per tokenizer key: the same in the export as in the GGUF the base was prepared from, or not (scores
    of normal pieces: the same order, which is what SentencePiece's merging reads)."""
    from tooltune.train.gguf_vocab import compare_vocab

    note = base / "tooltune-prepared.json"
    source = Path(json.loads(note.read_text(encoding="utf-8"))["source"]) if note.is_file() else None
    if source is None or not source.is_file():
        return ["the GGUF the base was prepared from is not on this machine: not compared"]
    return [f"`{key}`: {verdict}" for key, verdict in compare_vocab(source, exported).items()]


def llama_cpp(python: str, lib_dir: str, gguf: Path, texts: list[str], batch: list[list[int]], positions: int,
              work: Path) -> tuple[dict, list, list]:
    """(meta, llama.cpp's ids per text, its logits per prompt) from bench/llama_cpp_logits.py in `python`."""
    import subprocess

    import numpy as np

    requests, out = work / "llama_cpp_requests.json", work / "llama_cpp_out.npz"
    requests.write_text(json.dumps({"texts": texts, "ids": batch, "positions": positions}), encoding="utf-8")
    subprocess.run([python, str(Path(__file__).with_name("llama_cpp_logits.py")), "--lib-dir", lib_dir, "--gguf",
                    str(gguf), "--requests", str(requests), "--out", str(out), "--threads",
                    str(torch.get_num_threads())], check=True, stderr=subprocess.DEVNULL)
    got = np.load(out)
    return (json.loads(str(got["meta"])), [got[f"tokens_{i}"].tolist() for i in range(len(texts))],
            [torch.from_numpy(got[f"logits_{i}"]) for i in range(len(batch))])


def canonical_calls(text: str, eos: str) -> str:
    """`text` with every llama2 call's arguments as Go's `json` writes them (compact, keys sorted, whole floats as
    integers, nulls dropped as llama2 drops them): what Ollama's template can write."""
    def canonical(match: re.Match) -> str:
        def whole(value):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return [whole(v) for v in value] if isinstance(value, list) else value
        args = {k: whole(v) for k, v in json.loads(match.group(1)).items() if v is not None}
        return "search:\n" + json.dumps(args, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + eos
    return re.sub(r"search:\n(\{.*?\})" + re.escape(eos), canonical, text, flags=re.S)


def ollama_check(binary: str, modelfile: Path, histories: list[tuple], texts: list[str], observation: str,
                 runtime, eos: str) -> str:
    """One line: how many prompts the Modelfile's TEMPLATE, run by Go's text/template as Ollama runs it
    (bench/ollama_template.go), renders to the format's text, exactly and up to the calls' JSON."""
    import subprocess

    from tooltune.formats.runtimes import messages

    template = modelfile.read_text(encoding="utf-8").split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    chats = [messages(turns, observation, indent=runtime.result_indent) for turns, _ in histories]
    done = subprocess.run([binary], input=json.dumps({"template": template, "conversations": chats}), text=True,
                          capture_output=True, check=True)
    rendered = json.loads(done.stdout)
    exact = sum(a == b for a, b in zip(rendered, texts))
    close = sum(canonical_calls(a, eos) == canonical_calls(b, eos) for a, b in zip(rendered, texts))
    with_calls = sum(any(isinstance(t, Call) for t in turns) for turns, _ in histories)
    return (f"Ollama's TEMPLATE (Go text/template with Ollama's `json`, bench/ollama_template.go): {exact} of "
            f"{len(texts)} prompts exactly the format's text (Ollama adds the bos itself); {close} of {len(texts)} "
            f"once call arguments are compared as Go writes them (compact, sorted keys); {with_calls} of the prompts "
            f"hold a call in their history")


def compare(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float, float, int, int]:
    """(max |diff|, mean |diff|, max |diff| / max |reference|, top-1 agreements, positions)."""
    every = torch.cat([(g - w).abs().flatten() for g, w in zip(got, want)])
    scale = max(float(w.abs().max()) for w in want)
    agree = sum(int((g.argmax(-1) == w.argmax(-1)).sum()) for g, w in zip(got, want))
    return float(every.max()), float(every.mean()), float(every.max()) / scale, agree, sum(w.shape[0] for w in want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True, help="where the .gguf files go (not the repository)")
    parser.add_argument("--base", help="the base model folder, when not the run's")
    parser.add_argument("--quants", nargs="+", default=["f16", "q8_0"])
    parser.add_argument("--dialogues", type=int, default=3)
    parser.add_argument("--positions", type=int, default=32)
    parser.add_argument("--llama-cpp", nargs=2, metavar=("PYTHON", "LIB_DIR"),
                        help="also run llama.cpp on each file (bench/llama_cpp_logits.py in PYTHON, its library in "
                             "LIB_DIR) and compare its tokens and logits")
    parser.add_argument("--go", metavar="BINARY",
                        help="also render each prompt with the Modelfile's TEMPLATE through BINARY, built by `go build "
                             "-o BINARY bench/ollama_template.go`")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("LD_PRELOAD", "OMP_NUM_THREADS") if k in os.environ)
    command = shown_command("export_gguf.py", env=env)

    from transformers import AutoModelForCausalLM

    load_average = os.getloadavg()[0]  # other jobs on these cores make the timings below longer
    started = time.perf_counter()
    reference, tokenizer, _ = merged_model(args.run, args.base, dtype=torch.float32)
    merge_s = time.perf_counter() - started
    reference.eval()
    batch, texts, histories = prompts(args.run, tokenizer, args.dialogues)
    want = [logits(reference, ids, args.positions) for ids in batch]
    base_dir = Path(reference.config._name_or_path) if reference.config._name_or_path else None
    del reference
    hf_tokens = [tokenizer(text)["input_ids"] for text in texts]

    rows, checks, notes = [], [], []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for quant in args.quants:
        out = args.out_dir / f"{args.run.name}-{quant}.gguf"
        report = export_gguf(args.run, out, quant, args.base, force=True)
        started = time.perf_counter()
        loaded = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
        load_s = time.perf_counter() - started
        got = [logits(loaded, ids, args.positions) for ids in batch]
        del loaded
        rows.append((quant, "transformers", report, load_s) + compare(got, want))
        if args.llama_cpp:
            started = time.perf_counter()
            meta, ids, got = llama_cpp(*args.llama_cpp, out, texts, batch, args.positions, args.out_dir)
            rows.append((quant, "llama.cpp", report, time.perf_counter() - started) + compare(got, want))
            same = sum(a == b for a, b in zip(ids, hf_tokens))
            notes.append(f"{quant}: llama.cpp tokenizes {same} of {len(texts)} prompt texts to exactly the ids of "
                         f"the run's tokenizer; adds bos: {meta['add_bos']}; vocabulary {meta['n_vocab']}; chat "
                         f"template read back: {meta['chat_template'] == report_template(out)}")
        if quant == args.quants[0] and base_dir is not None:
            checks = tokenizer_check(base_dir, out)
        if quant == args.quants[0] and args.go:
            cfg = rundir.read_config(args.run)
            fmt = get_format(cfg.data.format).for_tokenizer(tokenizer)
            notes.append(ollama_check(args.go, report.modelfile, histories, texts, cfg.data.observation,
                                      runtime_for(fmt, tokenizer, ()), tokenizer.eos_token))

    lengths = [len(ids) for ids in batch]
    lines = [f"# GGUF export of {args.run.name}: size, time, logits against the merged model", "",
             f"    {command}", "",
             f"Run `{args.run}`, {torch.get_num_threads()} CPU threads. Merging alone took {merge_s:.1f} s (the "
             f"export time below includes it). {len(batch)} prompts ({min(lengths)}-{max(lengths)} tokens) from the "
             f"first {args.dialogues} course seed dialogues in the run's format, the last {args.positions} positions "
             f"of each scored: {sum(w.shape[0] for w in want)} positions x {want[0].shape[-1]} logits per row. "
             f"Reference: the merged model in float32. `transformers`: the GGUF loaded back with `gguf_file=` "
             f"(dequantised to float32); `llama.cpp`: llama.cpp's own CPU build (llama-cpp-cffi 0.4.42, April 2025) "
             f"on the same ids (`load / runtime (s)`: transformers' loading, llama.cpp's whole run). Load average "
             f"when it started: {load_average:.1f} (other jobs on these cores lengthen every time here).", "",
             "| quant | size (MB) | export (s) | runtime | load / runtime (s) | max abs diff | mean abs diff "
             "| max diff / max logit | top-1 agreement | tensors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for quant, runtime, report, load_s, mx, mean, rel, agree, total in rows:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(report.tensor_types.items()))
        lines.append(f"| {quant} | {report.bytes / 1e6:.1f} | {report.seconds:.1f} | {runtime} | {load_s:.1f} | "
                     f"{mx:.4f} | {mean:.5f} | {rel:.2e} | {agree}/{total} | {kinds} |")
    lines += ["", f"The largest |logit| of the reference over these positions: "
                  f"{max(float(w.abs().max()) for w in want):.2f}."]
    if notes:
        lines += ["", "The runtimes' side:", ""] + [f"- {note}" for note in notes]
    lines += ["", "Tokenizer metadata of the export against the GGUF the base was prepared from (what llama.cpp "
                  "reads):", ""] + [f"- {line}" for line in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        args.results.write_text(text, encoding="utf-8")


def report_template(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(gguf).fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None


if __name__ == "__main__":
    main()

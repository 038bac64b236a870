"""llama.cpp itself on a GGUF file: its tokenization of some texts and its logits at the last positions of some token
id sequences, for `bench/export_gguf.py --llama-cpp` to compare with the merged model. Needs only numpy, cffi and
llama.cpp's library as the `llama-cpp-cffi` wheel ships it (its CPU build, `_llama_cpp_cpu*.so`); it imports neither
torch nor transformers, so it runs in a small virtual environment of its own:

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install cffi numpy
    pip download --no-deps --only-binary=:all: -d /tmp/llwheels llama-cpp-cffi==0.4.42
    unzip -q /tmp/llwheels/llama_cpp_cffi-0.4.42-*.whl 'llama/_llama_cpp_cpu*' -d /tmp/llcffi
    /tmp/llvenv/bin/python bench/llama_cpp_logits.py --lib-dir /tmp/llcffi/llama --gguf M.gguf --requests R.json \
        --out O.npz

That wheel's library was built against GCC 14's C++ runtime, which needs one symbol (`__cxa_call_terminate`) that
Debian 12's lacks: `gcc -shared -fPIC -o /tmp/libcxa_shim.so shim.c` of a one-line C function that aborts, and
`LD_PRELOAD=/tmp/libcxa_shim.so`, stand in for it (it runs only when an exception escapes a noexcept function).

R.json: {"texts": [str, ...], "ids": [[int, ...], ...], "positions": K}. O.npz: `tokens_i` (llama.cpp's ids for
text i, special tokens added and parsed as llama.cpp does for a prompt), `logits_i` ((K, vocab) float32 for id
sequence i), `meta` (a JSON string: the library's build, vocabulary size, add_bos, the chat template).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np


def load_library(lib_dir: Path):
    matches = glob.glob(str(lib_dir / "_llama_cpp_cpu*.so"))
    if not matches:
        raise SystemExit(f"no _llama_cpp_cpu*.so in {lib_dir}")
    sys.path.insert(0, str(lib_dir))
    import _llama_cpp_cpu  # noqa: E402  (the cffi module of llama-cpp-cffi's CPU build)

    return _llama_cpp_cpu.lib, _llama_cpp_cpu.ffi


def tokenize(lib, ffi, vocab, text: str) -> list[int]:
    raw = text.encode("utf-8")
    room = len(raw) + 16
    out = ffi.new("int32_t[]", room)
    n = lib.llama_tokenize(vocab, ffi.new("char[]", raw), len(raw), out, room, True, True)
    if n < 0:
        raise SystemExit(f"llama_tokenize needs {-n} slots")
    return [out[i] for i in range(n)]


def logits(lib, ffi, ctx, ids: list[int], positions: int, n_vocab: int) -> np.ndarray:
    """(positions, n_vocab): llama.cpp's logits at the last `positions` of `ids`, decoded from an empty cache."""
    positions = min(positions, len(ids))
    lib.llama_kv_self_clear(ctx)
    batch = lib.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for i, tid in enumerate(ids):
            batch.token[i] = tid
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i >= len(ids) - positions else 0
        if lib.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        rows = [np.frombuffer(ffi.buffer(lib.llama_get_logits_ith(ctx, i), 4 * n_vocab), dtype=np.float32).copy()
                for i in range(len(ids) - positions, len(ids))]
    finally:
        lib.llama_batch_free(batch)
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib-dir", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    requests = json.loads(args.requests.read_text(encoding="utf-8"))
    lib, ffi = load_library(args.lib_dir)
    lib.llama_backend_init()
    model = lib.llama_model_load_from_file(str(args.gguf).encode(), lib.llama_model_default_params())
    if model == ffi.NULL:
        raise SystemExit(f"llama.cpp could not load {args.gguf}")
    vocab = lib.llama_model_get_vocab(model)
    n_vocab = lib.llama_vocab_n_tokens(vocab)
    longest = max([len(ids) for ids in requests.get("ids", [])] + [16])
    params = lib.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = longest
    params.n_threads = params.n_threads_batch = args.threads
    ctx = lib.llama_init_from_model(model, params)
    template = lib.llama_model_chat_template(model, ffi.NULL)
    out = {"meta": json.dumps({"n_vocab": n_vocab, "add_bos": bool(lib.llama_vocab_get_add_bos(vocab)),
                               "chat_template": ffi.string(template).decode() if template != ffi.NULL else None})}
    for i, text in enumerate(requests.get("texts", [])):
        out[f"tokens_{i}"] = np.array(tokenize(lib, ffi, vocab, text), dtype=np.int64)
    for i, ids in enumerate(requests.get("ids", [])):
        out[f"logits_{i}"] = logits(lib, ffi, ctx, ids, requests["positions"], n_vocab)
    np.savez(args.out, **out)
    lib.llama_free(ctx)
    lib.llama_model_free(model)


if __name__ == "__main__":
    main()

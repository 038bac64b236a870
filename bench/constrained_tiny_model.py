"""A small model to run bench/constrained.py on before a real fine-tuned one exists: a domain tokenizer and a
randomly initialised Llama, saved as a plain model directory, to be trained with `tooltune train`.

    PYTHONPATH=src python bench/constrained_tiny_model.py /tmp/cbench/tiny-base
    PYTHONPATH=src python -m tooltune train configs/full.yaml model.path=/tmp/cbench/tiny-base ...  (see results)

The tokenizer is a byte-level BPE trained on the course train split's text (so Chinese is a few tokens a word, and
prompts stay short); the model is a 4-layer, 192-wide Llama (about 2M parameters besides the embeddings).
"""

from __future__ import annotations

import json
import sys

from tooltune.dialogue import Assistant, Call, Result, User
from tooltune.datafiles import read_dialogues
from tooltune.paths import data_file
from tooltune.train.tiny import tiny_tokenizer

TRAIN = "hotel/v3_chatglm3_llama2/train.chatglm3.jsonl"
FORMAT_WORDS = "[Round 0]\n\nuser: assistant: search:\nreturn:\n"


def texts() -> list[str]:
    out = [FORMAT_WORDS] * 50
    for d in read_dialogues(data_file(TRAIN)):
        for t in d.turns:
            if isinstance(t, (User, Assistant)):
                out.append(t.content)
            elif isinstance(t, Call):
                out.append(json.dumps(t.arguments, ensure_ascii=False, indent=4))
            elif isinstance(t, Result):
                out.append(json.dumps(t.records, ensure_ascii=False, separators=(",", ":")))
    return out


def main(directory: str) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(texts(), vocab_size=4000)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    print(f"{directory}: vocab {len(tok)}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

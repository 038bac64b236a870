"""Tiny in-process tokenizers and dialogues for the format tests (no model hub).

- `byte_bpe(texts)`: a byte-level BPE trained on `texts`, GPT-2 style (`<|endoftext|>` is bos and eos, no prefix).
- `llama_style(texts)`: a SentencePiece-like BPE (Metaspace word marks, `<s>` prefix, `</s>` eos, `<unk>`).
- `ChatGLM3Like`: ChatGLM3's tokenizer interface: role tokens exist as ids but `encode` spells them out as text,
  only `convert_tokens_to_ids` maps them; every text starts with `[gMASK]sop`.
- `QWEN_LIKE` / `GEMMA_LIKE`: Jinja chat templates, one with tool support and one without (strict alternation).
"""

from __future__ import annotations

import glob
import string
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tooltune.dialogue import Assistant, Call, Dialogue, Result, User, dialogue_from_seed
from tooltune.formats.chatglm3 import ASSISTANT, OBSERVATION, SYSTEM, SYSTEM_PREFIX, THOUGHT, USER


def seed_dialogues(data_root: Path, limit: int | None = None) -> list[Dialogue]:
    files = sorted(glob.glob(str(data_root / "hotel/raw/enhanced_hotel_data/*.json")))[:limit]
    return [dialogue_from_seed(json.loads(Path(p).read_text(encoding="utf-8")), where=p, id=Path(p).stem)
            for p in files]


def tiny_dialogue() -> Dialogue:
    """Every turn kind, an unanswered call, a float and an int argument, a list, quotes."""
    return Dialogue((
        User("找一家有\"早餐\"的酒店"),
        Call({"facilities": ["早餐服务"], "price_range_upper": 300, "rating_range_lower": 4.5}),
        Result([{"name": "甲酒店", "type": "经济型", "price": 280.0, "rating": 4.6, "hotel_id": 7, "phone": None}]),
        Assistant("推荐甲酒店。"),
        User("再找个豪华型的"),
        Call({"type": "豪华型"}),
        User("算了，谢谢"),
        Assistant("不客气。"),
    ))


def corpus(dialogues: list[Dialogue]) -> list[str]:
    """Training text for the tiny tokenizers: every turn's text as the formats write it."""
    out = []
    for d in dialogues:
        for t in d.turns:
            if isinstance(t, (User, Assistant)):
                out.append(t.content)
            else:
                out.append(json.dumps(t.arguments if isinstance(t, Call) else t.records, ensure_ascii=False, indent=4))
    out += [json.dumps([t.to_dict() for t in d.tools], ensure_ascii=False) for d in dialogues[:1]]
    words = "[Round 0]\n\nuser: assistant: search:\nreturn:\n问: 答: 结果: tool_call() ```python\n"
    return out + [words, SYSTEM_PREFIX, THOUGHT] * 20


def byte_bpe(texts: list[str], vocab_size: int = 800) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def llama_style(texts: list[str], vocab_size: int = 800) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    alphabet = sorted(set("".join(texts)) | set(string.printable))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 10, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


class ChatGLM3Like:
    """The parts of ChatGLM3's tokenizer the formats touch, over a byte-level BPE."""

    ROLES = {SYSTEM: 0, USER: 1, ASSISTANT: 2, OBSERVATION: 3, "[gMASK]": 4, "sop": 5, "</s>": 6}

    def __init__(self, inner: PreTrainedTokenizerFast):
        self.inner = inner
        self.base = max(self.ROLES.values()) + 1
        self.eos_token_id = self.ROLES["</s>"]
        self.unk_token_id = None

    def __len__(self) -> int:
        return self.base + len(self.inner)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # like ChatGLM3: role tokens written in text are NOT recognised; they become ordinary pieces
        ids = [self.base + i for i in self.inner.encode(text, add_special_tokens=False)]
        return [self.ROLES["[gMASK]"], self.ROLES["sop"]] + ids if add_special_tokens else ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def convert_tokens_to_ids(self, token: str) -> int | None:
        if token in self.ROLES:
            return self.ROLES[token]
        tid = self.inner.convert_tokens_to_ids(token)
        return None if tid is None else self.base + tid

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        names = {v: k for k, v in self.ROLES.items()}
        return [names[i] if i in names else self.inner.convert_ids_to_tokens(i - self.base) for i in ids]

    def decode(self, ids: list[int]) -> str:
        names = {v: k for k, v in self.ROLES.items()}
        out, run = [], []
        for i in ids:
            if i in names:
                out.append(self.inner.decode(run))
                out.append(names[i])
                run = []
            else:
                run.append(i - self.base)
        out.append(self.inner.decode(run))
        return "".join(out)


QWEN_LIKE = """\
{%- if tools %}<|im_start|>system
You may call functions. Their signatures:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Answer a call as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'user' %}<|im_start|>user
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content or '' }}
{%- for tc in m.tool_calls or [] %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

GEMMA_LIKE = """\
{{ bos_token }}
{%- if messages[0].role == 'system' %}{% set first = messages[0].content + '\n\n' %}{% set rest = messages[1:] %}
{%- else %}{% set first = '' %}{% set rest = messages %}{% endif %}
{%- for m in rest %}
{%- if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}
<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}
{{ (first if loop.first else '') + (m.content | trim) }}<end_of_turn>
{% endfor %}
{%- if add_generation_prompt %}<start_of_turn>model
{% endif %}"""

# A template that rewrites the past (drops earlier assistant turns): trained spans cannot be located.
FORGETFUL = """\
{%- for m in messages %}{% if m.role == 'user' or loop.last %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endif %}{% endfor %}
{%- if add_generation_prompt %}<|assistant|>{% endif %}"""


def with_template(tok: PreTrainedTokenizerFast, template: str, specials: list[str]) -> PreTrainedTokenizerFast:
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    return tok

"""Chat formats: dialogues to token ids with loss masks, and generated text back to turns (lecture 11.3-11.5).

`FORMATS` is the one table of formats; tests and benchmarks loop over it. Typical use::

    fmt = FORMATS[name].for_tokenizer(tokenizer)
    ensure_special_tokens(tokenizer, fmt.special_tokens)   # new ids -> the model's embeddings must be resized
    report = encode_all((s for d in dialogues for s in fmt.render(d, policy="all")), tokenizer, max_length=1024)
    rows = pack(report.examples, max_length=1024)           # or batches from length_grouped_batches(...)

and at inference: `encode(fmt.prompt(turns, tools), tokenizer)`, generate until eos or one of `fmt.stop_strings`,
decode keeping special tokens, `fmt.parse(text).turn`.
"""

from tooltune.errors import InputError
from tooltune.formats.base import (BOS, EOS, IGNORE_INDEX, OBSERVATIONS, POLICIES, ChatFormat, EncodeReport, Example,
                                   ParsedTurn, SampleTooLong, Segment, encode, encode_all, ensure_special_tokens, show)
from tooltune.formats.chat_template import ChatTemplateFormat
from tooltune.formats.chatglm2 import ChatGLM2Format
from tooltune.formats.chatglm3 import ChatGLM3Format
from tooltune.formats.llama2 import Llama2Format

FORMATS: dict[str, ChatFormat] = {
    "chatglm2": ChatGLM2Format(),
    "chatglm3": ChatGLM3Format(),
    "llama2": Llama2Format(),
    "chat_template": ChatTemplateFormat(),
}


def get_format(name: str) -> ChatFormat:
    """The registered format `name`, with an error listing the known ones."""
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r} (expected one of {', '.join(FORMATS)})", field="format")
    return FORMATS[name]


__all__ = ["BOS", "EOS", "IGNORE_INDEX", "OBSERVATIONS", "POLICIES", "ChatFormat", "EncodeReport", "Example",
           "ParsedTurn", "SampleTooLong", "Segment", "encode", "encode_all", "ensure_special_tokens", "show", "FORMATS",
           "get_format", "ChatTemplateFormat", "ChatGLM2Format", "ChatGLM3Format", "Llama2Format"]

"""The chat formats as the llama.cpp family renders prompts: a Jinja chat template (a GGUF's
`tokenizer.chat_template`, which llama.cpp, LM Studio and transformers render) and a Go template for an Ollama
`Modelfile`.

A runtime gets OpenAI-style messages: `user`, `assistant` with `content` or `tool_calls`, `tool` with the result as
text, and an optional `system` first. `RUNTIMES` has one entry per format (tests loop over `FORMATS` and fail on a
format without one); each says what it renders exactly (tests/test_export_gguf.py checks each claim on course
dialogues):

- `llama2`, `chatglm2`: rendered by transformers' Jinja, the template gives exactly the text of the format's
  `prompt` / `system_prompt` for the same turns, given each tool message's content as the run renders results
  (`result_text`: the records' JSON for the run's `data.observation`) and call arguments as an object in the run's
  order. The Ollama template, run by Go's text/template with Ollama's `json`, gives the same text but for call
  arguments in the history, which Go writes as compact JSON with sorted keys.
- `chatglm3`: the same, where every string argument is its own Python repr between single quotes (no quote, no
  backslash: the call body is a Python call, `tool_call(type='经济型')`); Ollama writes the arguments as JSON
  (`["a"]` for `['a']`), sorted, and always shows the run's tools.
- `chat_template`: the tokenizer's own template, written as it is (exact where it renders tools itself; otherwise the
  Modelfile's SYSTEM holds the tool instruction the format puts in the prompt, and tool calls and results are text the
  client writes as the format does: `<tool_call>{...}</tool_call>`, `<tool_response>...</tool_response>`). No Ollama
  TEMPLATE: Ollama picks its own from the GGUF's template when it knows it.

llama.cpp and LM Studio render the Jinja template with their own engines, which were not run here; the templates keep
to constructs that common Hugging Face chat templates use (`namespace`, `~`, `tojson(indent=4)`, `replace`,
`items()`, loop variables).
The Jinja template opens with the tokenizer's bos text, as Hugging Face templates do (llama.cpp cuts it where it
adds its own bos); the Ollama template does not (Ollama adds the bos when it tokenizes).
The model's output is read back with the format's parser (`fmt.parse`): llama.cpp and Ollama return it as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tooltune.dialogue import Assistant, Call, Result, Tool, Turn, User
from tooltune.errors import ToolTuneError
from tooltune.formats.base import ChatFormat, prefix_ids, records_json
from tooltune.formats.chat_template import TOOL_INSTRUCTION
from tooltune.formats.chatglm3 import ASSISTANT, OBSERVATION, SYSTEM, SYSTEM_PREFIX, USER


@dataclass(frozen=True)
class Runtime:
    """What a GGUF export writes for a format."""

    jinja: str
    """The chat template (`tokenizer.chat_template`)."""
    ollama: str | None
    """The Modelfile's TEMPLATE (Go text/template over `.Messages`); None: none written."""
    stops: tuple[str, ...]
    """Stop strings besides the end-of-sequence token (the Modelfile's `PARAMETER stop`)."""
    system: str = ""
    """The Modelfile's SYSTEM: the tool description where the format puts it in the prompt as text."""
    exact: str = ""
    """One line on what the templates render exactly (written into the Modelfile as a comment)."""
    result_indent: int | None = None
    """The indent of a `full` observation's JSON in the format (llama2: 4, as the course): what a tool message's
    content must hold (`result_text`)."""


def lit(text: str) -> str:
    """`text` as a Jinja string literal (double-quoted, JSON escapes: both Jinja and llama.cpp's engine read them)."""
    return json.dumps(text, ensure_ascii=False)


def go_lit(text: str) -> str:
    """`text` as a Go template string literal."""
    return json.dumps(text, ensure_ascii=False)


def special_text(tokenizer: Any) -> tuple[str, str]:
    """(what the tokenizer puts before every text, its eos token), as text: what the formats' `BOS` / `EOS` become."""
    ids = prefix_ids(tokenizer)
    bos = tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
    return bos, tokenizer.eos_token or ""


def messages(turns: Sequence[Turn], observation: str, system: str = "", indent: int | None = None
             ) -> list[dict[str, Any]]:
    """OpenAI-style messages for `turns`, as a client of llama.cpp or Ollama sends them (results as the run renders
    them, `result_text`; `indent`: the runtime's `result_indent`)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if isinstance(turn, User):
            out.append({"role": "user", "content": turn.content})
        elif isinstance(turn, Assistant):
            out.append({"role": "assistant", "content": turn.content})
        elif isinstance(turn, Call):
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": turn.name, "arguments": turn.arguments}}]})
        else:
            assert isinstance(turn, Result)
            out.append({"role": "tool", "name": turn.name, "content": result_text(turn.records, observation, indent)})
    return out


def result_text(records: list[dict[str, Any]] | None, observation: str, indent: int | None = None) -> str:
    """A tool message's content as the format shows results: the records' JSON, `full` (as the course: `indent` 4
    for llama2, one line elsewhere) or `compact` (no whitespace, `hotel_id` and empty values dropped)."""
    return records_json(records, observation, indent)


# ---- Jinja pieces shared by the templates ------------------------------------------------------------------------

# The call's arguments: an object (transformers, llama.cpp with object arguments) or a JSON string (OpenAI clients).
_ARGS = ("{%- set tc = call.function if call.function is defined else call -%}"
         "{%- set args = tc.arguments -%}")

# `json.dumps(args, indent=4, ensure_ascii=False)` less the null values (llama2's `target_text`), written out so that
# nested values keep their indentation.
_ARGS_INDENT4 = ("{%- if args is string -%}{{- args -}}{%- else -%}"
                 "{%- set ns.first = true -%}"
                 "{%- for k, v in args.items() -%}{%- if v is not none -%}"
                 "{{- ('{\\n    ' if ns.first else ',\\n    ') ~ (k | tojson) ~ ': '"
                 " ~ (v | tojson(indent=4) | replace('\\n', '\\n    ')) -}}"
                 "{%- set ns.first = false -%}"
                 "{%- endif -%}{%- endfor -%}"
                 "{{- '{}' if ns.first else '\\n}' -}}"
                 "{%- endif -%}")


def _llama2(fmt: ChatFormat, tokenizer: Any, tools: Sequence[Tool]) -> Runtime:
    bos, eos = special_text(tokenizer)
    jinja = (
        "{%- set ns = namespace(round=0, system='', first=true) -%}"
        + "{{- " + lit(bos) + " -}}"
        "{%- for message in messages -%}"
        "{%- if message.role == 'system' -%}{%- set ns.system = message.content -%}"
        "{%- elif message.role == 'user' -%}"
        "{{- '[Round ' ~ ns.round ~ ']\\n\\nuser: ' -}}"
        "{%- if ns.system -%}{{- ns.system ~ '\\n\\n' -}}{%- set ns.system = '' -%}{%- endif -%}"
        "{{- message.content ~ '\\n\\n' -}}{%- set ns.round = ns.round + 1 -%}"
        "{%- elif message.role == 'tool' -%}"
        "{{- '[Round ' ~ ns.round ~ ']\\n\\nreturn:\\n' ~ message.content ~ '\\n\\n' -}}"
        "{%- set ns.round = ns.round + 1 -%}"
        "{%- elif message.role == 'assistant' -%}"
        "{%- if message.tool_calls -%}"
        "{%- for call in message.tool_calls -%}" + _ARGS + "{{- 'search:\\n' -}}" + _ARGS_INDENT4 + "{%- endfor -%}"
        "{%- else -%}{{- 'assistant: ' ~ message.content -}}{%- endif -%}"
        + "{{- " + lit(eos + "\n\n") + " -}}"
        "{%- endif -%}"
        "{%- endfor -%}")
    # Go's text/template has no arithmetic: the round number is the length of a string grown by one per round.
    ollama = (
        '{{ $r := "" }}{{ $sys := "" }}'
        '{{ range .Messages }}'
        '{{ if eq .Role "system" }}{{ $sys = .Content }}'
        '{{ else if eq .Role "user" }}[Round {{ len $r }}]\n\nuser: '
        '{{ if $sys }}{{ $sys }}\n\n{{ $sys = "" }}{{ end }}{{ .Content }}\n\n{{ $r = printf "%sx" $r }}'
        '{{ else if eq .Role "tool" }}[Round {{ len $r }}]\n\nreturn:\n{{ .Content }}\n\n{{ $r = printf "%sx" $r }}'
        '{{ else if eq .Role "assistant" }}'
        '{{ if .ToolCalls }}{{ range .ToolCalls }}search:\n{{ json .Function.Arguments }}{{ end }}'
        '{{ else }}assistant: {{ .Content }}{{ end }}' + eos + '\n\n'
        '{{ end }}{{ end }}')
    return Runtime(jinja, ollama, ("[Round",), result_indent=4,
                   exact="Chat template: the run's llama2 text exactly; Ollama TEMPLATE: the same but for call "
                         "arguments in the history (compact JSON, sorted keys)")


def _chatglm2(fmt: ChatFormat, tokenizer: Any, tools: Sequence[Tool]) -> Runtime:
    bos, _ = special_text(tokenizer)
    jinja = (
        "{%- set ns = namespace(round=0, system='') -%}"
        + "{{- " + lit(bos) + " -}}"
        "{%- for message in messages -%}"
        "{%- if message.role == 'system' -%}{%- set ns.system = message.content -%}"
        "{%- elif message.role == 'user' -%}"
        "{{- '[Round ' ~ ns.round ~ ']\\n问: ' -}}"
        "{%- if ns.system -%}{{- ns.system ~ '\\n\\n' -}}{%- set ns.system = '' -%}{%- endif -%}"
        "{{- message.content ~ '\\n答: ' -}}{%- set ns.round = ns.round + 1 -%}"
        "{%- elif message.role == 'tool' -%}{{- '结果: ' ~ message.content ~ '\\n答: ' -}}"
        "{%- elif message.role == 'assistant' -%}"
        "{%- if message.tool_calls -%}"
        "{%- for call in message.tool_calls -%}" + _ARGS +
        "{{- tc.name ~ '\\n' ~ (args if args is string else args | tojson) ~ '\\n' -}}{%- endfor -%}"
        "{%- else -%}{{- message.content ~ '\\n' -}}{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}")
    ollama = (
        '{{ $r := "" }}{{ $sys := "" }}'
        '{{ range .Messages }}'
        '{{ if eq .Role "system" }}{{ $sys = .Content }}'
        '{{ else if eq .Role "user" }}[Round {{ len $r }}]\n问: '
        '{{ if $sys }}{{ $sys }}\n\n{{ $sys = "" }}{{ end }}{{ .Content }}\n答: {{ $r = printf "%sx" $r }}'
        '{{ else if eq .Role "tool" }}结果: {{ .Content }}\n答: '
        '{{ else if eq .Role "assistant" }}'
        '{{ if .ToolCalls }}{{ range .ToolCalls }}{{ .Function.Name }}\n{{ json .Function.Arguments }}\n{{ end }}'
        '{{ else }}{{ .Content }}\n{{ end }}'
        '{{ end }}{{ end }}')
    return Runtime(jinja, ollama, ("[Round", "问:", "结果:"),
                   exact="Chat template: the run's chatglm2 text exactly; Ollama TEMPLATE: the same but for call "
                         "arguments in the history (compact JSON, sorted keys)")


def _chatglm3(fmt: ChatFormat, tokenizer: Any, tools: Sequence[Tool]) -> Runtime:
    bos, _ = special_text(tokenizer)
    thought = getattr(fmt, "thought", None)
    head, _, tail = (thought or "").partition("{name}")
    # The run's tools as the format writes them: what the system message holds when a client sends none.
    default_tools = json.dumps([t.to_dict() for t in tools], ensure_ascii=False, indent=4)
    announce = ("{{- " + lit(ASSISTANT + "\n" + head) + " ~ tc.name ~ " + lit(tail) + " -}}") if thought else ""
    jinja = (
        "{%- set ns = namespace(system='') -%}"
        "{%- if messages and messages[0].role == 'system' -%}{%- set ns.system = messages[0].content -%}{%- endif -%}"
        + "{{- " + lit(bos + SYSTEM + "\n" + SYSTEM_PREFIX) + " -}}"
        # json.dumps([function, ...], indent=4, ensure_ascii=False), nested indentation kept
        "{%- if tools -%}{%- for tool in tools -%}"
        "{%- set fn = tool.function if tool.function is defined else tool -%}"
        "{{- ('[\\n    ' if loop.first else ',\\n    ') ~ (fn | tojson(indent=4) | replace('\\n', '\\n    ')) -}}"
        "{%- endfor -%}{{- '\\n]' -}}"
        "{%- else -%}{{- " + lit(default_tools) + " -}}{%- endif -%}"
        "{%- if ns.system -%}{{- '\\n' ~ ns.system -}}{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message.role == 'user' -%}{{- " + lit(USER + "\n") + " ~ message.content -}}"
        "{%- elif message.role == 'tool' -%}{{- " + lit(OBSERVATION + "\n") + " ~ message.content -}}"
        "{%- elif message.role == 'assistant' and message.tool_calls -%}"
        "{%- for call in message.tool_calls -%}" + _ARGS + announce
        + "{{- " + lit(ASSISTANT) + " ~ tc.name ~ '\\n```python\\ntool_call(' -}}"
        "{%- if args is string -%}{{- args -}}{%- else -%}"
        "{%- for k, v in args.items() -%}"
        "{{- (', ' if not loop.first else '') ~ k ~ '=' -}}"
        "{%- if v is string -%}{{- \"'\" ~ v ~ \"'\" -}}{%- else -%}{{- v -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- ')\\n```' -}}"
        "{%- endfor -%}"
        "{%- if loop.last or messages[loop.index].role != 'tool' -%}"
        "{{- " + lit(OBSERVATION + "\nnull") + " -}}{%- endif -%}"
        "{%- elif message.role == 'assistant' -%}{{- " + lit(ASSISTANT + "\n") + " ~ message.content -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + lit(ASSISTANT) + " -}}{%- endif -%}")
    announce_go = (ASSISTANT + "\n" + head + "{{ .Function.Name }}" + tail) if thought else ""
    ollama = (
        SYSTEM + "\n" + SYSTEM_PREFIX + default_tools +
        '{{ $pending := false }}{{ range .Messages }}'
        # a call the next message does not answer gets the course's `null` observation
        '{{ if and $pending (ne .Role "tool") }}' + OBSERVATION + '\nnull{{ end }}{{ $pending = false }}'
        '{{ if eq .Role "system" }}\n{{ .Content }}'
        '{{ else if eq .Role "user" }}' + USER + '\n{{ .Content }}'
        '{{ else if eq .Role "tool" }}' + OBSERVATION + '\n{{ .Content }}'
        '{{ else if eq .Role "assistant" }}'
        '{{ if .ToolCalls }}{{ range .ToolCalls }}' + announce_go + ASSISTANT +
        '{{ .Function.Name }}\n```python\ntool_call({{ $sep := "" }}{{ range $k, $v := .Function.Arguments }}'
        '{{ $sep }}{{ $k }}={{ json $v }}{{ $sep = ", " }}{{ end }})\n```{{ end }}{{ $pending = true }}'
        '{{ else }}' + ASSISTANT + '\n{{ .Content }}{{ end }}'
        '{{ end }}{{ end }}' + ASSISTANT)
    return Runtime(jinja, ollama, (USER, OBSERVATION),
                   exact="Chat template: the run's chatglm3 text exactly where string arguments hold no quote or "
                         "backslash (no tools sent: the run's); Ollama TEMPLATE: the same but for call arguments in "
                         "the history (JSON values, sorted keys), always with the run's tools")


def _chat_template(fmt: ChatFormat, tokenizer: Any, tools: Sequence[Tool]) -> Runtime:
    fmt = fmt.for_tokenizer(tokenizer)
    system = ""
    if tools and not getattr(fmt, "native_tools", False):
        system = TOOL_INSTRUCTION + json.dumps([t.to_dict() for t in tools], ensure_ascii=False)
    return Runtime(tokenizer.chat_template, None, tuple(fmt.stop_strings), system=system,
                   exact="the tokenizer's own chat template" + ("" if getattr(fmt, "native_tools", False) else
                                                                 "; tool calls and results are text (see SYSTEM)"))


RUNTIMES: dict[str, Callable[[ChatFormat, Any, Sequence[Tool]], Runtime]] = {
    "llama2": _llama2,
    "chatglm2": _chatglm2,
    "chatglm3": _chatglm3,
    "chat_template": _chat_template,
}
"""Format name -> the templates for a tokenizer and the run's tools (tools: for a Modelfile SYSTEM)."""


def runtime_for(fmt: ChatFormat, tokenizer: Any, tools: Sequence[Tool] = ()) -> Runtime:
    if fmt.name not in RUNTIMES:
        raise ToolTuneError(f"format {fmt.name!r} has no llama.cpp/Ollama template (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[fmt.name](fmt, tokenizer, tools)

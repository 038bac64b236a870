"""Schema-constrained tool calls: once the model opens a call, its body is generated under the tool's schema.

The model writes freely (a reply is never touched) until its text matches the format's call *opener* (llama2:
`search:` at the start; chatglm3: `search_hotels\\n` after `<|assistant|>`; chat_template: `<tool_call>`). From there
a grammar built from the tool's JSON schema masks the logits: only the schema's keys, each at most once and in any
order (the course's calls use many orders), enum values, numbers within the schema's bounds, the format's own layout
and quoting. When the body is complete, only the token that closes a call in that format is allowed (eos, ChatGLM3's
`<|observation|>`, the template's end marker). One mechanism; what differs per format is a row of `CALL_STYLES`.

The grammar engine is llguidance (the `constrained` extra); bench/results/constrained.md has the measurements that
chose it (per-token mask cost, schema bounds, any key order, install size) over xgrammar, lm-format-enforcer and
outlines-core. It needs a fast (Rust) Hugging Face tokenizer whose decoder it reads (byte-level BPE; Llama/Gemma's
`▁`-replace + byte-fallback decoder; not a bare Metaspace one, nor ChatGLM3's slow remote-code tokenizer).

Copying (`Copy`, `GenerationConfig.copy_values`): a free string of a call (no enum: the hotel tool's `name` and each
of its `facilities`) may further be limited to a span of the user's own words in the dialogue so far, or one of the
values the tool knows (the hotel database's facility and hotel names). The course's labels keep the user's words (148
of 156 facility values on test are spans of the user's turns; the rest are database names), and a fine-tuned model's
wrong facilities are mostly the user's words reordered or reworded. The grammar then differs per dialogue, so each
row compiles its own (a trie of the spans as one regex).

`LENGTH_CAPS`: the schema says nothing about length, but an unbounded string or number lets a model (a random one
surely) write until `max_new_tokens` and leave the call unclosed. The grammar therefore caps free strings, lists and
digits, far above anything in the course's data (longest facility 21 characters, at most 2 facilities, prices up to
1200, no value with more than 2 decimals).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from tooltune.dialogue import Tool
from tooltune.errors import InputError, ToolTuneError
from tooltune.formats.base import single_id

MISSING = ("constrained generation needs llguidance, which the 'constrained' extra installs: "
           "pip install 'tooltune[constrained]'")

LENGTH_CAPS = {"maxLength": 24, "maxItems": 4, "maximum": 100000, "multipleOf": 0.01}
"""Generation caps applied where the schema sets none: characters of a free string, items of a list, the largest
number, the finest fraction."""


@dataclass(frozen=True)
class Layout:
    """How a format spells an arguments object (JSON on one line, JSON indented by 4, a Python call)."""

    open: str
    sep: str
    close: str
    empty: str
    key: str
    """The text before a value, `{key}` standing for the key."""
    list_open: str
    list_sep: str
    list_close: str
    python: bool = False
    """Python literals (strings in single quotes, True/False) rather than JSON."""


INLINE = Layout("{", ", ", "}", "{}", '"{key}": ', "[", ", ", "]")
INDENT4 = Layout("{\n    ", ",\n    ", "\n}", "{}", '"{key}": ', "[\n        ", ",\n        ", "\n    ]")
PYTHON_CALL = Layout("tool_call(", ", ", ")", "tool_call()", "{key}=", "[", ", ", "]", python=True)


@dataclass(frozen=True)
class CallStyle:
    """Where a format's call starts, how its body is spelled, and what ends it."""

    opener: str
    """Regex searched in the generated text; `{name}` stands for the tool names (the matched one is the tool)."""
    head: str
    """Text between the opener and the arguments object (`{name}`: the tool's name)."""
    layout: Layout
    tail: str
    """Text after the arguments object."""
    close: str = ""
    """A closing tag after the tail."""
    end: str | None = None
    """The token that closes a call; None: the format's first stop string that is one token, else eos."""
    loose_newlines: bool = False
    """An optional newline may open the body and precede the closing tag (Qwen-style templates write them)."""


CALL_STYLES: dict[str, CallStyle] = {
    "llama2": CallStyle(r"^\s*search:", "\n", INDENT4, ""),
    "chatglm2": CallStyle(r"^\s*(?P<name>{name})[ \t]*\n", "", INLINE, ""),
    "chatglm3": CallStyle(r"(?:^|<\|assistant\|>)(?P<name>{name})\n", "```python\n", PYTHON_CALL, "\n```",
                          end="<|observation|>"),
    "chat_template": CallStyle(r"<tool_call>", '{{"name": "{name}", "arguments": ', INLINE, "}",
                               close="</tool_call>", loose_newlines=True),
}


def require_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf  # noqa: F401  (the tokenizer bridge)
    except ImportError:
        raise ToolTuneError(MISSING) from None
    return llguidance


# ---- grammar ------------------------------------------------------------------------------------------------

def lit(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class Copy:
    """Where a row's free strings come from: spans of `texts` (the user's turns) or whole `known` values per key."""

    texts: tuple[str, ...]
    known: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(key, values) pairs: the values a free string under that key (or in that key's list) may also be."""

    def values(self, key: str) -> tuple[str, ...]:
        return next((values for k, values in self.known if k == key), ())


def _char(ch: str) -> str:
    """One character in a regex: letters, digits and CJK as they are, anything else as a code point escape."""
    return ch if ch.isalnum() else f"\\x{{{ord(ch):X}}}"


def span_regex(texts: Sequence[str], known: Sequence[str], cap: int, quote: str) -> str | None:
    """A regex matching any non-empty span of at most `cap` characters of `texts`, or any of `known` whole; None
    when there is none. Spans never cross the quote, a backslash or a control character (string rules have no
    escapes). Built as a trie: every prefix of every suffix of a text is a span."""
    bad = re.compile(f"[{re.escape(quote)}\\\\\x00-\x1f]")
    root: dict[str, Any] = {}

    def insert(text: str, every_prefix: bool) -> None:
        node = root
        for ch in text:
            node = node.setdefault(ch, {})
            if every_prefix:
                node[""] = True  # "" marks where a value may end
        node[""] = True

    for text in texts:
        for piece in bad.split(text):
            for start in range(len(piece)):
                insert(piece[start:start + cap], every_prefix=True)
    for value in known:
        if value and not bad.search(value):
            insert(value, every_prefix=False)

    def alternatives(node: dict[str, Any]) -> str | None:
        parts = []
        for ch, child in node.items():
            if ch == "":
                continue
            rest = alternatives(child)
            if rest is None:
                parts.append(_char(ch))
            else:
                parts.append(f"{_char(ch)}(?:{rest}){'?' if child.get('') else ''}")
        return "|".join(parts) or None

    return alternatives(root)


def capped(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `LENGTH_CAPS` where it sets no bound of its own."""
    out = dict(schema)
    kind = out.get("type")
    if kind == "string" and "enum" not in out:
        out.setdefault("maxLength", LENGTH_CAPS["maxLength"])
    if kind in ("number", "integer"):
        out.setdefault("maximum", LENGTH_CAPS["maximum"])
        if kind == "number":
            out.setdefault("multipleOf", LENGTH_CAPS["multipleOf"])
    if kind == "array":
        out.setdefault("maxItems", LENGTH_CAPS["maxItems"])
        out["items"] = capped(out.get("items", {}))
    return out


def string_rule(schema: dict[str, Any], python: bool, copy: Copy | None = None, key: str = "") -> str:
    quote = "'" if python else '"'
    if "enum" in schema:
        return " | ".join(lit(repr(v) if python else json.dumps(v, ensure_ascii=False)) for v in schema["enum"])
    if copy is not None:
        spans = span_regex(copy.texts, copy.values(key), schema["maxLength"], quote)
        if spans is not None:  # (None: nothing to copy from, so the string is left free)
            return f"/{quote}(?:{spans}){quote}/"
    # no escapes at all: nothing the course's strings need, and the same text in JSON and Python
    return f"/{quote}[^{quote}\\\\\\x00-\\x1f]{{0,{schema['maxLength']}}}{quote}/"


def value_rule(schema: dict[str, Any], layout: Layout, where: str, copy: Copy | None = None) -> str:
    """A Lark expression for one argument value (`copy`: free strings copied, see `Copy`)."""
    kind = schema.get("type")
    if kind == "string":
        return string_rule(schema, layout.python, copy, where.removesuffix("[]"))
    if kind in ("number", "integer"):
        # a number is spelled alike in JSON and Python; llguidance enforces minimum/maximum/multipleOf
        bounds = {k: schema[k] for k in ("type", "minimum", "maximum", "multipleOf", "exclusiveMinimum",
                                         "exclusiveMaximum") if k in schema}
        return f"%json{json.dumps(bounds)}"
    if kind == "boolean":
        return '"True" | "False"' if layout.python else '"true" | "false"'
    if kind == "array":
        item = value_rule(schema["items"], layout, where + "[]", copy)
        items = ""
        for _ in range(max(0, schema["maxItems"] - 1)):  # unrolled: 1..maxItems items
            items = f"({lit(layout.list_sep)} ({item}){' ' + items if items else ''})?"
        return f"{lit('[]')} | {lit(layout.list_open)} ({item}) {items} {lit(layout.list_close)}"
    if not layout.python:
        return f"%json{json.dumps(schema, ensure_ascii=False)}"
    raise InputError(f"the chatglm3 call grammar cannot spell a {kind or 'untyped'} value", field=where)


def object_rules(tool: Tool, layout: Layout, prefix: str, copy: Copy | None = None) -> tuple[str, list[str]]:
    """(start expression, rules) for the arguments object: each key at most once, in any order.

    Rule `{prefix}_{used}` continues after the keys in bit set `used`; with n keys there are 2^n such rules, so
    tools with many keys fall back to the schema's order (one rule per position)."""
    props = tool.parameters.get("properties", {})
    keys = list(props)
    required = set(tool.parameters.get("required", []))
    values = [f"{prefix}_v{i}" for i in range(len(keys))]
    rules = [f"{v}: {value_rule(capped(props[k]), layout, k, copy)}" for v, k in zip(values, keys)]
    pair = [f"{lit(layout.key.format(key=k))} {v}" for k, v in zip(keys, values)]
    any_order = len(keys) <= 8

    def nexts(used: int, last: int) -> list[int]:
        return [j for j in range(len(keys)) if not used >> j & 1 and (any_order or j > last)]

    def done(used: int) -> bool:
        return all(used >> keys.index(k) & 1 for k in required if k in keys)

    seen: set[int] = set()
    pending = [(1 << j, j) for j in nexts(0, -1)]
    while pending:
        used, last = pending.pop()
        if used in seen:
            continue
        seen.add(used)
        alts = [lit(layout.close)] if done(used) else []
        for j in nexts(used, last):
            alts.append(f"{lit(layout.sep)} {pair[j]} {prefix}_{used | 1 << j}")
            pending.append((used | 1 << j, j))
        rules.append(f"{prefix}_{used}: " + (" | ".join(alts) or lit(layout.close)))
    first = [f"{pair[j]} {prefix}_{1 << j}" for j in nexts(0, -1)]
    start = " | ".join(([lit(layout.empty)] if done(0) else []) + [f"{lit(layout.open)} {f}" for f in first])
    return start, rules


def body_grammar(style: CallStyle, tools: Sequence[Tool], copy: Copy | None = None) -> str:
    """The Lark grammar of everything after the opener, for a call to one of `tools`."""
    rules, alts = [], []
    for n, tool in enumerate(tools):
        obj, obj_rules = object_rules(tool, style.layout, f"t{n}", copy)
        rules += obj_rules
        head, tail, close = lit(style.head.format(name=tool.name)), lit(style.tail), lit(style.close)
        if style.loose_newlines:
            head, close = f'"\\n"? {head}', f'"\\n"? {close}'
        alts.append(f"{head} ({obj}) {tail} {close}")
    return "start: " + " | ".join(f"({a})" for a in alts) + "\n" + "\n".join(rules) + "\n"


# ---- the logits processor -------------------------------------------------------------------------------------

class Constraint:
    """Per format and tokenizer: the call style, the llguidance tokenizer, compiled grammars (cached)."""

    def __init__(self, fmt: Any, tokenizer: Any, end_ids: Sequence[int]):
        llg = require_llguidance()
        if fmt.name not in CALL_STYLES:
            raise InputError(f"no constrained call style for format {fmt.name!r}", field="format")
        self.llg, self.style, self.tokenizer = llg, CALL_STYLES[fmt.name], tokenizer
        self.end_id = self._end_id(fmt, tokenizer, end_ids)
        try:
            self.lltok = llg.hf.from_tokenizer(tokenizer, eos_token=self.end_id)
        except ValueError as e:  # a slow tokenizer, or a decoder llguidance does not read (a bare Metaspace one)
            raise ToolTuneError(f"llguidance cannot read this tokenizer (constrained generation needs a fast "
                                f"Hugging Face tokenizer with a decoder it knows): {e}") from None
        self._fresh: dict[tuple[str, ...], Any] = {}
        """A matcher at the start of the body per tool set; rows get deep copies (building one costs ~60 ms:
        the any-order object has 2^n rules, measured with the 7-key hotel tool)."""

    def _end_id(self, fmt: Any, tokenizer: Any, end_ids: Sequence[int]) -> int:
        names = [self.style.end] if self.style.end else list(fmt.stop_strings)
        for name in names:
            tid = single_id(tokenizer, name)
            if tid is not None:
                return tid
        if tokenizer.eos_token_id is None:
            raise InputError("constrained calls need an eos token or a one-token stop string", field="tokenizer")
        return tokenizer.eos_token_id

    def opener(self, tools: Sequence[Tool]) -> re.Pattern[str]:
        return re.compile(self.style.opener.replace("{name}", "|".join(re.escape(t.name) for t in tools)))

    def matcher(self, tools: Sequence[Tool], copy: Copy | None = None) -> Any:
        key = (tuple(json.dumps(t.to_dict(), sort_keys=True) for t in tools), copy)
        if key not in self._fresh:
            if copy is not None and len(self._fresh) > 256:  # per-dialogue grammars: keep the cache small
                self._fresh = {k: m for k, m in self._fresh.items() if k[1] is None}
            grammar = self.llg.LLMatcher.grammar_from_lark(body_grammar(self.style, tools, copy))
            m = self.llg.LLMatcher(self.lltok, grammar)
            if m.is_error():
                raise InputError(f"the call grammar does not compile: {m.get_error()}", field="tools")
            self._fresh[key] = m
        return self._fresh[key].deep_copy()

    def processor(self, tools_per_row: Sequence[Sequence[Tool]], prompt_width: int, end_ids: Sequence[int],
                  text_stops: Sequence[str], copies: Sequence[Copy | None] | None = None) -> "CallConstraint":
        return CallConstraint(self, tools_per_row, prompt_width, end_ids, text_stops, copies)


@dataclass
class RowState:
    """One sequence of a batch: free text until the opener, then the body under the grammar, then done."""

    tools: Sequence[Tool]
    ids: list[int]
    copy: Copy | None = None
    """Where the row's free strings come from (None: anywhere)."""
    matcher: Any = None
    done: bool = False
    broken: bool = False
    """The opener's token carried text the grammar refuses: the call is left unconstrained (counted)."""


class CallConstraint:
    """A `transformers` LogitsProcessor for one `generate` call (its rows' states live here)."""

    def __init__(self, owner: Constraint, tools_per_row: Sequence[Sequence[Tool]], prompt_width: int,
                 end_ids: Sequence[int], text_stops: Sequence[str], copies: Sequence[Copy | None] | None = None):
        self.owner, self.width = owner, prompt_width
        self.end_ids, self.text_stops = set(end_ids), tuple(text_stops)
        self.rows = [RowState(tools, [], copy=copies[r] if copies else None) for r, tools in enumerate(tools_per_row)]
        self.openers = [owner.opener(tools) for tools in tools_per_row]
        self.constrained_steps = 0
        """Token positions whose logits were masked (for the latency benchmark)."""
        self.seconds = 0.0
        """Time spent in this processor (watching for openers, grammar steps, masks)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        new = input_ids.shape[1] > self.width  # (B, T): the last column is the token just chosen
        for r, row in enumerate(self.rows):
            if row.done:
                continue
            if new:
                self._advance(r, row, int(input_ids[r, -1]))
            if row.matcher is not None and not row.done:
                self._mask(row, scores[r])
        self.seconds += time.perf_counter() - started
        return scores

    def _advance(self, r: int, row: RowState, token: int) -> None:
        if row.matcher is not None:
            row.matcher.consume_token(token)
            row.done = token == self.owner.end_id or row.matcher.is_error()
            return
        if token in self.end_ids:
            row.done = True
            return
        row.ids.append(token)
        text = self.owner.tokenizer.decode(row.ids, skip_special_tokens=False)
        if any(s in text for s in self.text_stops):
            row.done = True
            return
        found = self.openers[r].search(text)
        if found is None:
            return
        tools = row.tools
        if "name" in found.groupdict():
            tools = [t for t in row.tools if t.name == found.group("name")]
        row.matcher = self.owner.matcher(tools, row.copy)
        rest = text[found.end():]  # the opener's last token may carry the body's first characters
        if rest:
            ids = self.owner.lltok.tokenize_str(rest)
            if row.matcher.try_consume_tokens(ids) != len(ids):
                row.matcher, row.broken, row.done = None, True, True

    def _mask(self, row: RowState, scores: torch.Tensor) -> None:
        bits = torch.frombuffer(bytearray(row.matcher.compute_bitmask()), dtype=torch.uint8)
        allowed = ((bits.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).flatten().bool()  # little-endian
        allowed = allowed.to(scores.device)  # the bitmask is built on the CPU; the scores may be on a GPU
        width = min(len(allowed), scores.shape[0])
        scores[:width].masked_fill_(~allowed[:width], float("-inf"))
        scores[width:] = float("-inf")
        self.constrained_steps += 1

    @property
    def broken(self) -> int:
        return sum(row.broken for row in self.rows)

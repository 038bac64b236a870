"""What every chat format shares: segments, the one tokenisation, loss policies, observations, truncation.

A format renders a dialogue into `Segment`s: pieces of text (or single special tokens), each `trainable` or not.
`encode` turns segments into an `Example` (`input_ids` and `labels` aligned, `IGNORE_INDEX` where not trained; the
shift by one happens only inside the loss). Every format goes through the same `encode`, so "which tokens are trained"
is decided once, by the segments, and can be printed (`show`) and kept as golden text.

Two placeholders stand for tokens whose spelling depends on the tokenizer, not on the format:
`BOS` expands to the tokenizer's own prefix (Llama `<s>`, ChatGLM3 `[gMASK]sop`, nothing for GPT-2) and `EOS` to
`tokenizer.eos_token_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Sequence

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.errors import InputError

IGNORE_INDEX = -100
BOS = "<tooltune:bos>"
EOS = "<tooltune:eos>"
POLICIES = ("all", "last")
OBSERVATIONS = ("full", "compact")

# Fields a compact observation drops. Measured on the course train set (bench/results/formats.md): replies after a
# search mention name (2109 of 2312), facilities (265, mostly ones the user asks about later, not the searched ones,
# so the list stays whole), rating 245, price 216, type 105, subway 59, phone 39, address 37; `hotel_id` 29 times,
# all of them small numbers that happen to occur in the text. So only `hotel_id` (and empty values) go.
COMPACT_DROPPED = ("hotel_id",)


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text, or one special token (`special=True`: encodes to exactly one id)."""

    text: str
    trainable: bool
    special: bool = False
    weight: float = 1.0
    """Multiplies the loss of a trainable segment's tokens (`render(call_weight=...)`); 1 almost everywhere."""


@dataclass(frozen=True)
class ParsedTurn:
    """A generated continuation read back as a turn. `malformed`: the text looked like a call (or like nothing the
    format writes) but could not be read cleanly; `turn` is then the best reading (a call with whatever arguments
    were readable, or the text as a reply). Kept outside `Call` so that `Call` equality stays the dialogue's."""

    turn: Call | Assistant
    malformed: bool = False
    raw: str = ""


@dataclass
class Example:
    """One training (or prompt) sequence: an encoded sample, or (training with packing) several packed into one row.
    `labels[i]` is the target *at* position i (`IGNORE_INDEX` = not trained); the loss shifts them by one."""

    input_ids: list[int]
    labels: list[int]
    truncated_tokens: int = 0
    """Tokens cut from the front to fit `max_length` (0: whole)."""
    weights: list[float] | None = None
    """Per-token loss weights aligned with `labels`, where a segment has a weight other than 1 (data.call_weight: the
    tokens of calls); None: all 1."""
    position_ids: list[int] | None = None
    """Only for packed rows: positions restarting at 0 at every packed sample."""
    weight: float = 1.0
    """Multiplies this example's token losses (data.loss_weights); 1 for every example otherwise."""

    @property
    def trained_tokens(self) -> int:
        return trained_count(self.labels)


def trained_count(labels: Sequence[int]) -> int:
    """Tokens the loss trains on: labels not `IGNORE_INDEX` after the loss's shift (`labels[1:]`; the first
    position has no token before it to predict it from). Every count of trained tokens is this one."""
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


@dataclass
class EncodeReport:
    """What `encode_all` made of a list of samples: nothing is dropped without a line here."""

    examples: list[Example] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    """For each example, the index of the sample it came from."""
    truncated: list[int] = field(default_factory=list)
    """Indexes of samples kept with their front cut off."""
    dropped: list[tuple[int, str]] = field(default_factory=list)
    """(sample index, why) for samples that could not be kept."""

    def summary(self) -> str:
        return (f"{len(self.examples)} examples, {len(self.truncated)} truncated, {len(self.dropped)} dropped"
                + (f" (first: sample {self.dropped[0][0]}: {self.dropped[0][1]})" if self.dropped else ""))


class SampleTooLong(InputError):
    """A sample whose trained tail alone does not fit `max_length`."""


class ChatFormat:
    """A chat format: dialogue -> training samples, history -> prompt, generated text -> turn.

    Subclasses implement `_pieces` (the whole dialogue as segments tagged with the model turn they belong to),
    `prompt` and `parse`; `render` applies the loss policy. One level of inheritance, no more.
    """

    name: str = ""
    stop_strings: tuple[str, ...] = ()
    """Text at which generation stops (besides the tokenizer's eos): the format's own end markers."""
    special_tokens: tuple[str, ...] = ()
    """Tokens the tokenizer must have as single ids (`ensure_special_tokens` adds missing ones)."""

    def for_tokenizer(self, tokenizer: Any) -> "ChatFormat":
        """The format to use with `tokenizer`. Fixed formats return themselves; `chat_template` binds the
        tokenizer's template. Callers (train, eval, chat) always go through this."""
        return self

    def render(self, dialogue: Dialogue, *, policy: str = "all", observation: str = "full",
               call_weight: float = 1.0) -> list[list[Segment]]:
        """The training samples of `dialogue` (one per dialogue; ChatGLM2: one per model turn).
        `policy`: "all" trains every model turn (calls and replies), "last" only the dialogue's last one.
        `call_weight`: the loss weight of the tokens of tool calls (their end tokens included), replies keeping 1."""
        check_choice(policy, POLICIES, "policy")
        check_choice(observation, OBSERVATIONS, "observation")
        if not call_weight > 0:
            raise InputError(f"must be above 0, not {call_weight}", field="call_weight")
        calls = {i for i, turn in enumerate(dialogue.turns) if isinstance(turn, Call)} if call_weight != 1 else set()
        samples = [s for s in self._samples(dialogue, observation) if last_target(s) is not None]
        if not samples:
            return []
        final = max(last_target(s) for s in samples)
        if policy == "last":  # ChatGLM2 has one sample per model turn: only the final turn's sample stays
            samples = [s for s in samples if last_target(s) == final]
        return [apply_policy(pieces, final if policy == "last" else None, calls, call_weight) for pieces in samples]

    def _samples(self, dialogue: Dialogue, observation: str) -> list[list[tuple[Segment, int | None]]]:
        raise NotImplementedError

    def prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], *, observation: str = "full") -> list[Segment]:
        raise NotImplementedError

    def parse(self, text: str) -> ParsedTurn:
        raise NotImplementedError

    def system_prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], system: str, *,
                      observation: str = "full") -> list[Segment]:
        """The prompt with a client's system text (an OpenAI `system` message; "" = none). A format without a system
        role (this default: llama2, chatglm2) opens the first user turn with it and a blank line, as Gemma's own chat
        template does with a system message; chatglm3 and chat_template override it."""
        return self.prompt(with_system_in_first_user(turns, system), tools, observation=observation)

    def partial(self, text: str) -> tuple[str, str] | None:
        """What a continuation generated so far already is, for streaming: ("reply", the reply's text so far) or
        ("call", the call's arguments as JSON text so far), each a prefix of what it will be once the turn is done;
        None while it could still become either (then the turn is sent whole when it ends). This default never
        decides; a format whose first tokens decide (llama2) overrides it."""
        return None


def with_system_in_first_user(turns: Sequence[Turn], system: str) -> list[Turn]:
    """`turns` with `system` and a blank line opening the first user turn (no change when `system` is "")."""
    out = list(turns)
    if not system:
        return out
    first = next((i for i, t in enumerate(out) if isinstance(t, User)), None)
    if first is None:
        raise InputError("a system message needs a user turn to open", field="messages")
    out[first] = User(f"{system}\n\n{out[first].content}")
    return out


def without_partial_stop(text: str, stops: Iterable[str]) -> str:
    """`text` cut at its first stop string, less a tail that may be the start of one (held back while streaming)."""
    text = cut_at_stop(text, stops)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                text = text[:-k]
                break
    return text


def arguments_so_far(text: str) -> str:
    """The arguments a call body written as a JSON object (`text`) holds so far, as `json.dumps(args,
    ensure_ascii=False)` will write them once the call is done, less the closing brace: only the key-value pairs
    already followed by a comma count (a value being written may still change). "" before the object opens."""
    start = text.find("{")
    if start == -1:
        return ""
    last_comma = None
    for k, ch, depth in jsonio.json_structure(text, start):
        if ch in "}]" and depth == 0:
            break
        if ch == "," and depth == 1:
            last_comma = k
    if last_comma is None:
        return "{"
    pairs, _ = read_json_object(text[start:last_comma] + "}")
    if not pairs:
        return "{"
    return json.dumps(pairs, ensure_ascii=False)[:-1]


Piece = tuple[Segment, "int | None"]
"""A segment and, when trainable, the index of the model turn it belongs to (what the loss policy selects on)."""


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r} (expected one of {', '.join(choices)})", field=what)


def last_target(pieces: Iterable[Piece]) -> int | None:
    targets = [t for _, t in pieces if t is not None]
    return max(targets) if targets else None


def apply_policy(pieces: list[Piece], keep: int | None, weighted: Collection[int] = (), weight: float = 1.0
                 ) -> list[Segment]:
    """Segments with only the model turn `keep` trainable (None: every model turn stays trainable); the trainable
    segments of the model turns in `weighted` get the loss weight `weight`."""
    out = []
    for seg, turn in pieces:
        trainable = seg.trainable and (keep is None or turn == keep)
        if trainable != seg.trainable:
            seg = Segment(seg.text, trainable, seg.special)
        if trainable and turn in weighted:
            seg = Segment(seg.text, True, seg.special, weight)
        out.append(seg)
    return merge(out)


def merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring text segments with the same `trainable` flag and weight (fewer, longer pieces to tokenize)."""
    out: list[Segment] = []
    for seg in segments:
        if seg.text == "" and not seg.special:
            continue
        if (out and not seg.special and not out[-1].special and out[-1].trainable == seg.trainable
                and out[-1].weight == seg.weight):
            out[-1] = Segment(out[-1].text + seg.text, seg.trainable, weight=seg.weight)
        else:
            out.append(seg)
    return out


def compact_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in COMPACT_DROPPED and v not in (None, "", [])} for r in records]


def records_json(records: list[dict[str, Any]] | None, observation: str, indent: int | None = None) -> str:
    """A result's records as the format shows them: full = as the course (`indent` as the format has it),
    compact = only the fields replies use, no whitespace."""
    if records is None:
        return json.dumps(None)
    if observation == "compact":
        return json.dumps(compact_records(records), ensure_ascii=False, separators=(",", ":"))
    return json.dumps(records, ensure_ascii=False, indent=indent)


def tools_json(tools: Sequence[Tool], indent: int | None = 4) -> str:
    return json.dumps([t.to_dict() for t in tools], ensure_ascii=False, indent=indent)


def result_after(turns: Sequence[Turn], i: int) -> Result | None:
    nxt = turns[i + 1] if i + 1 < len(turns) else None
    return nxt if isinstance(nxt, Result) else None


def check_prompt_turns(turns: Sequence[Turn]) -> None:
    """`prompt` asks for the next model turn: the history must end where the model speaks next."""
    if not turns or isinstance(turns[-1], (Call, Assistant)):
        last = turns[-1].role if turns else "nothing"
        raise InputError(f"a prompt history must end with a user or result turn, not {last}", field="turns")


def cut_at_stop(text: str, stops: Iterable[str]) -> str:
    cut = len(text)
    for s in stops:
        k = text.find(s)
        if k != -1:
            cut = min(cut, k)
    return text[:cut]


# ---- the one tokenisation ------------------------------------------------------------------------------------

def ensure_special_tokens(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """Make each of `tokens` a single id of `tokenizer`, adding the missing ones as special tokens.

    Returns the ids that are new. Contract with the model side (the training helper): when the list is not empty the
    model's input and output embeddings must be resized to `len(tokenizer)` and the new rows trained (under PEFT:
    `modules_to_save=["embed_tokens", "lm_head"]` or `trainable_token_indices`), else those ids are random vectors.
    """
    missing = [t for t in tokens if single_id(tokenizer, t) is None]
    if not missing:
        return []
    before = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    new = [tokenizer.convert_tokens_to_ids(t) for t in missing]
    assert all(i >= before for i in new), "added special tokens must get new ids"
    return new


def single_id(tokenizer: Any, token: str) -> int | None:
    """The id of `token` when the tokenizer has it as one token, else None. Goes through `convert_tokens_to_ids`
    (ChatGLM3's tokenizer does not map role tokens written in text: `encode("<|user|>")` spells it out)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == getattr(tokenizer, "unk_token_id", None) and token != getattr(tokenizer, "unk_token",
                                                                                             None)):
        return None
    return tid


def prefix_ids(tokenizer: Any) -> list[int]:
    """What the tokenizer puts before every text (what `BOS` expands to)."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    if len(ids) >= 2 and ids[-1] == tokenizer.eos_token_id:  # a post-processor that also appends eos
        ids = ids[:-1]
    return ids


_ANCHOR = "\n"


def _adds_prefix_space(tokenizer: Any) -> bool:
    """SentencePiece-style tokenizers (Llama) start every `encode` call with a word-boundary marker; encoding
    segments one by one would then put a space at every segment start."""
    cached = getattr(tokenizer, "_tooltune_prefix_space", None)
    if cached is None:
        first = tokenizer.convert_ids_to_tokens(tokenizer.encode("a", add_special_tokens=False))
        cached = bool(first) and first[0] in ("▁", "▁a", "Ġ", "Ġa")
        try:
            tokenizer._tooltune_prefix_space = cached
        except AttributeError:
            pass
    return cached


def text_ids(tokenizer: Any, text: str, at_start: bool) -> list[int]:
    """Token ids of a text segment. Mid-sequence segments of a prefix-space tokenizer are encoded after an anchor
    that is then cut off, so that the ids are those of the text inside a longer string."""
    if at_start or not _adds_prefix_space(tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False))
    anchor = tokenizer.encode(_ANCHOR, add_special_tokens=False)
    ids = tokenizer.encode(_ANCHOR + text, add_special_tokens=False)
    if ids[:len(anchor)] == anchor:
        return list(ids[len(anchor):])
    return list(tokenizer.encode(text, add_special_tokens=False))


def segment_ids(tokenizer: Any, segments: Sequence[Segment]) -> list[list[int]]:
    """The ids of each segment: special ones through `convert_tokens_to_ids` (exactly one id, or an error)."""
    out: list[list[int]] = []
    for k, seg in enumerate(segments):
        if seg.special:
            if seg.text == BOS:
                out.append(prefix_ids(tokenizer))
                continue
            tid = tokenizer.eos_token_id if seg.text == EOS else single_id(tokenizer, seg.text)
            if tid is None:
                raise InputError(f"the tokenizer has no single token {seg.text!r}: call "
                                 f"ensure_special_tokens(tokenizer, format.special_tokens) and resize the model")
            out.append([tid])
        else:
            at_start = all(s.special and s.text == BOS for s in segments[:k])
            out.append(text_ids(tokenizer, seg.text, at_start))
    return out


def encode(segments: Sequence[Segment], tokenizer: Any, max_length: int | None = None) -> Example:
    """Segments -> `Example`. Over `max_length`, whole segments are cut from the front (after a leading `BOS`)
    until the rest fits: the tail is kept, no segment (a special token, a call, a message) and no run of trained
    segments (a model turn with its end token) is ever split. Raises `SampleTooLong` when no such cut leaves a
    trained token (prompts, with nothing trained, just keep their tail)."""
    ids = segment_ids(tokenizer, segments)
    head = 1 if segments and segments[0].special and segments[0].text == BOS else 0
    start = head
    total = sum(len(x) for x in ids)
    if max_length is not None and total > max_length:
        start = _cut_point(segments, ids, head, max_length - sum(len(x) for x in ids[:head]))
        if start is None:
            raise SampleTooLong(f"{total} tokens, and no cut keeps a whole trained turn within max_length={max_length}")
    input_ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    for k, (seg, seg_ids) in enumerate(zip(segments, ids)):
        if head <= k < start:
            continue
        input_ids += seg_ids
        labels += seg_ids if seg.trainable else [IGNORE_INDEX] * len(seg_ids)
        weights += [seg.weight if seg.trainable else 1.0] * len(seg_ids)
    return Example(input_ids, labels, truncated_tokens=total - len(input_ids),
                   weights=weights if any(w != 1.0 for w in weights) else None)


def _cut_point(segments: Sequence[Segment], ids: list[list[int]], head: int, room: int) -> int | None:
    """The first segment to keep: the earliest one from which the rest fits in `room`, never inside a run of
    trained segments (a model turn and its end token stay together), and leaving something trained."""
    tail = 0
    best = None
    for k in range(len(ids) - 1, head - 1, -1):
        tail += len(ids[k])
        if tail > room:
            break
        splits_run = k > head and segments[k - 1].trainable and segments[k].trainable
        if not splits_run:
            best = k
    is_prompt = not any(s.trainable for s in segments)  # a prompt keeps its tail, trained or not
    if best is None or not is_prompt and not any(s.trainable for s in segments[best:]):
        return None
    return best


def encode_all(samples: Iterable[Sequence[Segment]], tokenizer: Any, max_length: int | None = None) -> EncodeReport:
    """Encode training samples; a sample that cannot fit or has no trained token is dropped and listed."""
    report = EncodeReport()
    for i, segments in enumerate(samples):
        try:
            ex = encode(segments, tokenizer, max_length)
        except SampleTooLong as e:
            report.dropped.append((i, str(e)))
            continue
        if ex.trained_tokens == 0:
            report.dropped.append((i, "no trained token"))
            continue
        if ex.truncated_tokens:
            report.truncated.append(i)
        report.examples.append(ex)
        report.sources.append(i)
    return report


# ---- showing what is trained -----------------------------------------------------------------------------------

def show(segments: Sequence[Segment], color: bool = False) -> str:
    """Rendered text with trained spans marked: `[[...]]` (golden files, pipes) or ANSI green (a terminal)."""
    opened, closed = ("\x1b[1;32m", "\x1b[0m") if color else ("[[", "]]")
    out = []
    for k, seg in enumerate(segments):
        starts = seg.trainable and (k == 0 or not segments[k - 1].trainable)
        ends = seg.trainable and (k + 1 == len(segments) or not segments[k + 1].trainable)
        out.append((opened if starts else "") + seg.text + (closed if ends else ""))
    return "".join(out)


def read_json_object(text: str) -> tuple[dict[str, Any] | None, bool]:
    """The JSON object at the start of `text` (after whitespace): (object, clean). `clean` is False when anything
    but whitespace follows it; (None, False) when there is no readable object, or when it holds what no tool argument
    can (a lone surrogate, `NaN`, an integer of hundreds of digits, nesting past `jsonio.MAX_DEPTH`). Never raises."""
    body = text.lstrip()
    try:
        obj, end = jsonio.decode(body, "generated text")
    except InputError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    return obj, body[end:].strip() == ""

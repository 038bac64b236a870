"""Policies for the bot tests: scripted ones (the flow), a real Generator over every chat format, a real tiny model.

- `ScriptedPolicy`: returns given turns in order, records the histories it was asked about.
- `ScriptedLM`: a causal-LM stand-in whose `generate` appends, for each call, the token ids a trained model would
  write for the next scripted turn (the format's trained span of that turn: its text and end token). Everything
  around it is real: the format renders the prompt, `Generator` cuts and decodes, the format parses.
- `tiny_llama`: a real 2-layer Llama with random weights (whatever it writes must flow through without a crash).
- `streaming_server`: a server over a real Generator whose scripted model pauses mid-turn (streaming tests).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from pathlib import Path
from typing import Sequence

import torch

from formats_support import QWEN_LIKE, byte_bpe, corpus, tiny_dialogue, with_template
from tooltune.bot import GeneratorPolicy
from tooltune.bot.policy import Step
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, Turn, User
from tooltune.formats import FORMATS, IGNORE_INDEX, ParsedTurn, encode, ensure_special_tokens
from tooltune.formats.base import arguments_so_far
from tooltune.inference import GenerationConfig, Generator

FORMAT_NAMES = tuple(FORMATS)
CHAT_TEMPLATE_SPECIALS = ["<|im_start|>", "<|im_end|>"]


class ScriptedPolicy:
    name = "scripted"

    def __init__(self, turns: Sequence[Call | Assistant], malformed: Sequence[bool] = ()):
        self.turns = list(turns)
        self.malformed = list(malformed) + [False] * (len(turns) - len(malformed))
        self.histories: list[tuple[Turn, ...]] = []
        self.options: list = []
        """The `TurnOptions` each turn was asked with."""

    def next_turn(self, history, options=None):
        self.histories.append(tuple(history))
        self.options.append(options)
        k = len(self.histories) - 1
        if k >= len(self.turns):
            raise AssertionError(f"the script has {len(self.turns)} turns; turn {k + 1} was asked for")
        turn = self.turns[k]
        if options is not None and options.on_partial is not None:  # streamed as a format's partial reads go
            if isinstance(turn, Assistant):
                for end in range(1, len(turn.content) + 1, 3):
                    options.on_partial("reply", turn.content[:end])
            else:
                body = json.dumps(turn.arguments, ensure_ascii=False, indent=4)
                for end in range(1, len(body) + 1, 5):
                    options.on_partial("call", arguments_so_far(body[:end]))
        return Step(ParsedTurn(turn, malformed=self.malformed[k], raw=f"raw {k}"), f"raw {k}")


class ScriptedLM(torch.nn.Module):
    """`generate` continues each prompt with the next scripted id list (batch of one, as the bot asks)."""

    def __init__(self, scripts: Sequence[list[int]]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # Generator reads the device from the parameters
        self.scripts = list(scripts)
        self.prompts: list[list[int]] = []

    def generate(self, input_ids, attention_mask=None, stopping_criteria=(), **kwargs):
        """The script's next ids, one token at a time through the stopping criteria (as `generate` calls them)."""
        assert input_ids.shape[0] == 1, "the bot generates one history at a time"
        self.prompts.append(input_ids[0].tolist())
        ids = self.scripts[len(self.prompts) - 1]
        out = input_ids
        for token in ids:
            out = torch.cat([out, torch.tensor([[token]], dtype=torch.long)], dim=1)
            if any([bool(criterion(out, None).all()) for criterion in stopping_criteria]):
                break
        return out


def tokenizer_for(name: str):
    """A byte-level BPE trained here, with the format's special tokens (and a Qwen-like template for chat_template)."""
    base = _BASE.get("tok")
    if base is None:
        base = _BASE["tok"] = byte_bpe(corpus([tiny_dialogue()]) + ["北京酒店 经济型 豪华型 推荐 评分"] * 5,
                                       vocab_size=400)
    tok = copy.deepcopy(base)
    if name == "chat_template":
        tok = with_template(tok, QWEN_LIKE, CHAT_TEMPLATE_SPECIALS)
    fmt = FORMATS[name].for_tokenizer(tok)
    ensure_special_tokens(tok, fmt.special_tokens)
    return fmt, tok


_BASE: dict = {}


def written_ids(fmt, tok, turn: Call | Assistant) -> list[int]:
    """The ids a model trained on `fmt` writes for `turn`: the trained span of the turn ending a dialogue."""
    dialogue = Dialogue((User("x"), turn))
    sample = fmt.render(dialogue, policy="last")[-1]
    ex = encode(sample, tok)
    return [i for i, label in zip(ex.input_ids, ex.labels) if label != IGNORE_INDEX]


def scripted_generator(name: str, turns: Sequence[Call | Assistant]) -> tuple[GeneratorPolicy, ScriptedLM, object]:
    fmt, tok = tokenizer_for(name)
    model = ScriptedLM([written_ids(fmt, tok, t) for t in turns])
    # the tiny tokenizer spells Chinese out in bytes: prompts are long, and a chat_template prompt cannot be cut
    config = GenerationConfig(max_new_tokens=64, max_prompt_tokens=8192)
    return GeneratorPolicy(Generator(model, tok, fmt, config=config)), model, tok


def tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaForCausalLM(config).eval()


def real_tiny_policy(name: str = "llama2", max_new_tokens: int = 12) -> GeneratorPolicy:
    fmt, tok = tokenizer_for(name)
    model = tiny_llama(len(tok))
    config = GenerationConfig(max_new_tokens=max_new_tokens, max_prompt_tokens=1024)
    return GeneratorPolicy(Generator(model, tok, fmt, config=config), name="tiny-llama")


def save_tiny_run(directory: Path, name: str = "llama2") -> Path:
    """A real tiny model saved as a run directory (`tooltune_run.json` names the format)."""
    import json

    fmt, tok = tokenizer_for(name)
    model = tiny_llama(len(tok))
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    (directory / "tooltune_run.json").write_text(json.dumps({"format": name}), encoding="utf-8")
    return directory


ARGS = {"type": "豪华型", "rating_range_lower": 4.8}
"""A search the server tests' scripted policies make."""
TOOLS = [{"type": "function", "function": HOTEL_TOOL.to_dict()}]
"""The hotel tool as an OpenAI request's `tools`."""
ASK = [{"role": "user", "content": "找一家评分4.8以上的豪华型酒店"}]
"""The user message the server tests send."""


@contextlib.contextmanager
def live_app(policy, db, **config):
    """A live server (`LiveServer`) over `policy` and `db`, named "tiny", 2 hotels a search, and `config`'s other
    `ServerConfig` fields; yields its URL."""
    from tooltune.bot import SessionConfig
    from tooltune.bot.server import ServerConfig, create_app

    settings = ServerConfig(model_name="tiny", session=SessionConfig(limit=2), **config)
    with LiveServer(create_app(policy, db, settings)) as url:
        yield url


class LiveServer:
    """The app served by uvicorn in a thread on 127.0.0.1 and a free port; `with LiveServer(app) as url: ...`."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class SwitchPolicy:
    """One server per test module; each test sets the policy it needs."""

    name = "switch"

    def __init__(self):
        self.inner = None

    def next_turn(self, history, options=None):
        return self.inner.next_turn(history, options)


class SlowLM(ScriptedLM):
    """A scripted model that stops after `pause_at` tokens until `go` is set: a generation still in progress."""

    def __init__(self, scripts, pause_at: int):
        super().__init__(scripts)
        self.pause_at, self.go, self.paused = pause_at, threading.Event(), threading.Event()
        self.written = 0
        """Tokens written so far in the current turn."""

    def generate(self, input_ids, attention_mask=None, stopping_criteria=(), **kwargs):
        def pausing(out, scores):
            self.written = out.shape[1] - input_ids.shape[1]
            if out.shape[1] - input_ids.shape[1] == self.pause_at:
                self.paused.set()
                assert self.go.wait(30)
            return torch.zeros(out.shape[0], dtype=torch.bool)

        return super().generate(input_ids, attention_mask, [*stopping_criteria, pausing], **kwargs)


def streaming_server(db, turn, pause_at: int):
    """A server over a real Generator (llama2) whose scripted model writes `turn`, pausing after `pause_at` tokens."""
    from tooltune.bot.server import ServerConfig, create_app

    fmt, tok = tokenizer_for("llama2")
    model = SlowLM([written_ids(fmt, tok, turn)], pause_at)
    generator = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=64, max_prompt_tokens=4096))
    return model, create_app(GeneratorPolicy(generator), db, ServerConfig(model_name="tiny"))

"""Load on `tooltune serve`: N concurrent streaming clients for T seconds on loopback, per scheduler; latency, time
to first token, generated tokens per second, errors, the server's memory.

For each scheduler (`--schedulers`, default `lock,batch`: the one-lock server beside the batching one, same code,
same model) the script starts `tooltune serve` in a subprocess on 127.0.0.1 and a free port, then for each client
count (`--clients`, default 1,4,16) runs that many client threads for `--seconds`. Each client sends streaming
requests back to back (`stream_options.include_usage`, one user message and the `search_hotels` tool, as an
OpenAI client sends it, rotating four asks): each is one model turn, a call the client would run or a reply. A
request's latency is to its last event; its time to first token is to the first chunk that carries content or a
tool call (a call's header goes as soon as the model has written that it calls; the role chunk does not count); its
tokens are its `usage.completion_tokens`. Requests still running when the window closes are cut there and counted
apart (not errors, not in the percentiles); tokens/s is the completed requests' tokens over the window. Peak memory
is the server's VmHWM after each window.

The model is `--run` (a run or model folder; the demo's, or `bench/artifacts/g7`, with its base prepared) or, by
default, a tiny stand-in built here: a 2-layer Llama with random weights (it rarely writes the end token, so nearly
every turn is --max-new-tokens long): that measures the server (queueing, HTTP, SSE), not a model. Results go to
bench/results/bot.md (or --out) with the command that made them.

    python bench/serve_load.py --seconds 20
    python bench/serve_load.py --run bench/artifacts/g7 --clients 1,4,16 --seconds 60 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shown import command as shown_command  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "bot.md"
TOOLS = [{"type": "function", "function": {"name": "search_hotels", "description": "查酒店",
                                           "parameters": {"type": "object", "properties": {}}}}]
ASKS = ["帮我找一家评分4.5以上的经济型酒店", "有没有带早餐的豪华型酒店", "500元以内的舒适型酒店有哪些", "谢谢"]


def build_tiny_run(directory: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(ASKS * 20 + ["[Round 0]\n\nuser: assistant: search:\nreturn:\n"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "tooltune_run.json").write_text(json.dumps({"format": "llama2"}), encoding="utf-8")
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, limit: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer within {limit:.0f} s")


@dataclass
class Window:
    """What one client count under one scheduler measured."""

    scheduler: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    cut: int = 0
    """Requests still running when the window closed."""
    peak_rss_mb: float = 0.0


class WindowClosed(Exception):
    """The window ended while the request was running."""


def one_request(client, url: str, k: int, deadline: float) -> tuple[float, float | None, int]:
    """Request k of a client (streamed): (latency, time to first token or None, completion tokens); raises on any
    error status, error event or a stream that does not end with [DONE]."""
    body = {"model": "m", "messages": [{"role": "user", "content": ASKS[k % len(ASKS)]}], "stream": True,
            "stream_options": {"include_usage": True}, "tools": TOOLS}
    t0 = time.monotonic()
    first, tokens, last = None, 0, ""
    timeout = max(0.5, deadline - t0)
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise WindowClosed()
            if not line:
                continue
            last = line
            if line == "data: [DONE]":
                break
            event = json.loads(line[len("data: "):])
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']['message'][:200]}")
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                delta = choice["delta"]
                if first is None and (delta.get("content") or delta.get("tool_calls")):
                    first = time.monotonic() - t0
    if last != "data: [DONE]":
        raise RuntimeError("the stream did not end with [DONE]")
    return time.monotonic() - t0, first, tokens


def run_window(url: str, window: Window) -> None:
    import httpx

    lock = threading.Lock()
    deadline = time.monotonic() + window.seconds

    def client_loop(i: int) -> None:
        with httpx.Client() as client:
            k = i
            while time.monotonic() < deadline:
                try:
                    latency, first, tokens = one_request(client, url, k, deadline)
                    with lock:
                        window.latencies.append(latency)
                        window.tokens += tokens
                        if first is not None:
                            window.first_tokens.append(first)
                except (httpx.TimeoutException, WindowClosed):  # cut by the end of the window
                    with lock:
                        window.cut += 1
                except Exception as e:  # counted and reported, never hidden
                    with lock:
                        window.errors.append(f"{type(e).__name__}: {e}")
                k += 1

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(window.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=window.seconds + 60)


def drain(url: str) -> None:
    """Wait until the requests the window's end cut are done (a one-token request queues behind them), so that the
    next window starts on an idle server."""
    import httpx

    body = {"model": "m", "messages": [{"role": "user", "content": ASKS[0]}], "max_tokens": 1, "tools": TOOLS}
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).raise_for_status()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve_and_measure(args, run: Path, scheduler: str, tmp: Path) -> list[Window]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    command = [sys.executable, "-m", "tooltune", "serve", str(run), "--port", str(port), "--device", "cpu",
               "--max-new-tokens", str(args.max_new_tokens), "--scheduler", scheduler,
               "--max-batch", str(args.max_batch), "--max-queue", str(2 * max(args.clients) + 1),
               "--feedback-db", str(tmp / f"feedback-{scheduler}.sqlite")]
    if args.dtype:
        command += ["--dtype", args.dtype]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.domain_vocab:
        command += ["--domain-vocab"]
    log = open(tmp / f"server-{scheduler}.log", "w")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    windows = []
    try:
        wait_ready(url, proc)
        one_request(__import__("httpx").Client(), url, 0, time.monotonic() + 600)  # warm-up, not measured
        for clients in args.clients:
            window = Window(scheduler, clients, args.seconds)
            run_window(url, window)
            window.peak_rss_mb = peak_rss_mb(proc.pid)
            drain(url)
            print(row(window), flush=True)
            windows.append(window)
    finally:
        log.close()
        proc.terminate()  # the server this script started, by its own handle
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return windows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def row(w: Window) -> str:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f}" if values else "-"

    return (f"| {w.scheduler} | {w.clients} | {len(w.latencies)} | {w.cut} | {len(w.errors)} | {ms(w.latencies, 50)} | "
            f"{ms(w.latencies, 95)} | {ms(w.first_tokens, 50)} | {ms(w.first_tokens, 95)} | "
            f"{w.tokens / w.seconds:.1f} | {w.peak_rss_mb:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="run or model folder to serve (default: a tiny stand-in built here)")
    parser.add_argument("--clients", default="1,4,16", help="client counts, one window each (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    parser.add_argument("--schedulers", default="lock,batch", help="servers to measure, in turn (default lock,batch)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--dtype", help="the server's --dtype (default: its own)")
    parser.add_argument("--threads", type=int, help="the server's --threads (default: its own)")
    parser.add_argument("--domain-vocab", action="store_true", help="the server's --domain-vocab")
    parser.add_argument("--note", default="", help="a line about the conditions, put in the results")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    # stopped from outside: end like an error, so that the server this script started is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    command = shown_command("serve_load.py")
    load_before = os.getloadavg()

    windows: list[Window] = []
    with tempfile.TemporaryDirectory(prefix="tooltune-serve-load-") as tmp:
        run = args.run or build_tiny_run(Path(tmp) / "tiny")
        for scheduler in args.schedulers.split(","):
            windows += serve_and_measure(args, run, scheduler, Path(tmp))
    report(args, command, windows, load_before)
    return 0 if not any(w.errors for w in windows) else 1


def report(args, command: str, windows: list[Window], load_before) -> None:
    table = "\n".join(row(w) for w in windows)
    errors = sorted({e for w in windows for e in w.errors})
    first_errors = "\n".join(f"- {e}" for e in errors[:5]) or "- none"
    model = (f"`{args.run}` (float32 on the CPU unless --dtype, adapter merged, --threads {args.threads or 'default'}"
             f"{', --domain-vocab' if args.domain_vocab else ''})"
             if args.run else
             "a tiny stand-in, NOT a trained model: a 2-layer Llama (hidden 64) with random weights and a byte-level "
             "BPE trained by the script, llama2 format; it rarely writes the end token, so nearly every turn is "
             f"{args.max_new_tokens} tokens")
    speedups = []
    for clients in args.clients:
        rates = {w.scheduler: w.tokens / w.seconds for w in windows if w.clients == clients}
        if rates.get("lock") and "batch" in rates:
            speedups.append(f"{clients} clients: {rates['batch'] / rates['lock']:.2f}x")
    text = f"""# Bot: `tooltune serve` under load

Command: `{command}` (on {platform.machine()}, {os.cpu_count()} CPU cores, load average before the run:
{" ".join(f"{x:.1f}" for x in load_before)}, after: {" ".join(f"{x:.1f}" for x in os.getloadavg())}; CPU only).
{args.note}

Model: {model}. --max-new-tokens {args.max_new_tokens}, --max-batch {args.max_batch}.
Every request streams (SSE, `include_usage`) one model turn: one user message and the `search_hotels` tool, the
model answers with a call (which the client would run) or a reply. `lock`: one generation at a
time under one lock (the server before batching); `batch`: the scheduler decodes the turns waiting together.
Windows of {args.seconds:g} s; latency and time to first token (TTFT) in ms over the requests that completed in the
window; "cut": requests the window's end interrupted; tokens/s: generated tokens of the completed requests over the
window; memory: the server's peak resident set (VmHWM) so far, in MB.

| scheduler | clients | ok | cut | errors | p50 latency | p95 latency | p50 TTFT | p95 TTFT | tokens/s | peak MB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{table}

Aggregate tokens/s, batch over lock: {", ".join(speedups) or "-"}.

Errors (first distinct ones):
{first_errors}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())

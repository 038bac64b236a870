"""Load on `tooltune serve`: N concurrent clients for T seconds on loopback; latency percentiles and errors.

The script builds a tiny model (a 2-layer Llama with random weights and a byte-level BPE trained here, llama2
format; random weights rarely write the end token, so nearly every request generates --max-new-tokens tokens),
starts `tooltune serve` on it in a subprocess on 127.0.0.1 and a free port, and runs the clients in threads. Each
client sends requests back to back (rotating: plain, streaming, with `tools`) until the time is up; a request still
running then is waited for (bounded by --request-timeout). What it measures is the server: queueing behind its one
model lock, HTTP, JSON, SSE; not a real model's speed. Results go to bench/results/bot.md with the command that
made them.

    python bench/serve_load.py                      # 50 clients, 60 s
    python bench/serve_load.py --clients 8 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def wait_ready(url: str, proc: subprocess.Popen, limit: float = 120.0) -> None:
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
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {limit:.0f} s")


def one_request(client, url: str, k: int) -> None:
    """Request k of a client: plain, streaming, or with tools, in turn; raises on any non-200 or bad body."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": ASKS[k % len(ASKS)]}]}
    kind = k % 3
    if kind == 1:
        body["stream"] = True
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            lines = [line for line in r.iter_lines() if line]
        if lines[-1] != "data: [DONE]":
            raise RuntimeError("stream did not end with [DONE]")
        return
    if kind == 2:
        body["tools"] = TOOLS
    r = client.post(f"{url}/v1/chat/completions", json=body)
    r.raise_for_status()
    if r.json()["choices"][0]["finish_reason"] not in ("stop", "tool_calls", "length"):
        raise RuntimeError(f"unexpected body {r.text[:200]}")


def run_clients(url: str, clients: int, seconds: float, timeout: float) -> tuple[list[float], list[str], float]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(i: int) -> None:
        with httpx.Client(timeout=timeout) as client:
            k = i
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    one_request(client, url, k)
                    with lock:
                        latencies.append(time.monotonic() - t0)
                except Exception as e:  # counted and reported, never hidden
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                k += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + timeout + 30)
    return latencies, errors, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = " ".join(["python bench/serve_load.py", *sys.argv[1:]])

    with tempfile.TemporaryDirectory(prefix="tooltune-serve-load-") as tmp:
        run = build_tiny_run(Path(tmp) / "tiny")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        log = open(Path(tmp) / "server.log", "w")  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "tooltune", "serve", str(run), "--port", str(port),
                                 "--device", "cpu", "--max-new-tokens", str(args.max_new_tokens),
                                 # the default (conversations stored), in the temporary folder, not the user cache
                                 "--feedback-db", str(Path(tmp) / "feedback.sqlite")],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, proc)
            latencies, errors, wall = run_clients(url, args.clients, args.seconds, args.request_timeout)
        finally:
            log.close()
            proc.terminate()  # the server this script started, by its own handle
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    report(args, command, latencies, errors, wall)
    return 0 if not errors else 1


def report(args, command: str, latencies: list[float], errors: list[str], wall: float) -> None:
    ms = [x * 1000 for x in latencies]
    rows = [("clients", args.clients), ("duration (s)", f"{args.seconds:g} (wall {wall:.1f})"),
            ("requests ok", len(latencies)), ("errors", len(errors)),
            ("throughput (req/s)", f"{len(latencies) / wall:.2f}")]
    if ms:
        rows += [(f"latency p{q} (ms)", f"{percentile(ms, q):.0f}") for q in (50, 90, 99)]
        rows += [("latency mean / max (ms)", f"{statistics.mean(ms):.0f} / {max(ms):.0f}")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    first_errors = "\n".join(f"- {e}" for e in sorted(set(errors))[:5]) or "- none"
    text = f"""# Bot: `tooltune serve` under load

Command: `{command}` (on {platform.machine()}, {os.cpu_count()} CPU cores, load average before the run:
{" ".join(f"{x:.1f}" for x in os.getloadavg())}; CPU only).

Model: a tiny stand-in, NOT a trained model: a 2-layer Llama (hidden 64) with random weights and a byte-level BPE
trained by the script, llama2 format; with random weights the end token is rare, so nearly every request generates
{args.max_new_tokens} tokens (the server's --max-new-tokens).
Each client sends requests back to back on loopback, rotating plain / streaming (SSE, checked to end with
`data: [DONE]`) / with `tools`. The server runs one generation at a time (one `threading.Lock` around the model:
`LockedPolicy`), so latency is mostly queueing, about clients x one generation, and throughput is one generation's
rate; a streamed answer is generated whole before its first chunk. The machine is shared (see the load average), so
the numbers are rough; the point is the error count under 50-way concurrency.

| measure | value |
| --- | ---: |
{table}

Errors (first distinct ones):
{first_errors}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())

"""Memory benchmark of the vastllm proxy: RSS before and after many unique large answers.

Starts the Ollama lab double, a redis-server and the proxy on 127.0.0.1, then sends
``--answers`` (default 10,000) requests, each with a unique ``--answer-kb`` (default 100 KB)
answer, ``--concurrency`` (default 8) at a time, non-streaming and streaming alternately, and
reports the proxy's RSS (``/proc/PID/status``) before, at its peak and after.

The lab double has no switch for a large answer; it echoes a tool's result into its reply
(``Lab reply from <model>: tool <name> returned <result> -- ...``), so each request ends with a
unique tool result of the wanted size and the answer is that large.

    .venv/bin/python benchmarks/proxy_memory_bench.py [--answers 10000] [--answer-kb 100]
        [--concurrency 8] [--target-mb 120] [--env VASTLLM_X=Y ...]

Exit code 0 when the final RSS is at most ``--target-mb`` (default 120), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vastllm_lab.ollama.process import LabOllamaProcess

MODEL = "qwen3-coder:30b"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc, args[0])
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def request_body(index: int, answer_bytes: int, stream: bool) -> bytes:
    result = f"{index:08d}-{secrets.token_hex(8)}-" + "x" * answer_bytes
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [
            {"role": "user", "content": "read the file"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"p": "a"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}],
            },
        ],
    }
    return json.dumps(body).encode()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, int]:
    """One keep-alive POST /v1/messages; returns (status, answer bytes)."""
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "content-length" in fields:
        return status, len(await reader.readexactly(int(fields["content-length"])))
    size = 0
    while True:
        chunk_size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if chunk_size == 0:
            await reader.readuntil(b"\r\n")
            return status, size
        size += len(await reader.readexactly(chunk_size + 2)) - 2


async def load(port: int, answers: int, answer_bytes: int, concurrency: int, pid: int) -> dict:
    counter = iter(range(answers))
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    peak = 0.0

    async def worker() -> None:
        nonlocal peak
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        try:
            for index in counter:
                status, size = await exchange(
                    reader, writer, request_body(index, answer_bytes, index % 2 == 1)
                )
                statuses[status] = statuses.get(status, 0) + 1
                sizes.append(size)
                if index % 200 == 0:
                    peak = max(peak, rss_mb(pid))
                    print(f"  {index:6d} answers, RSS {rss_mb(pid):.1f} MB", flush=True)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "seconds": round(time.monotonic() - started, 1),
        "statuses": statuses,
        "mean_answer_kb": round(sum(sizes) / max(1, len(sizes)) / 1024, 1),
        "peak_rss_mb": round(max(peak, rss_mb(pid)), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=10_000)
    parser.add_argument("--answer-kb", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--target-mb", type=float, default=120.0)
    parser.add_argument(
        "--env", action="append", default=[], help="extra VASTLLM_X=Y for the proxy"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="proxy-memory-bench-") as tmp:
        workdir = Path(tmp)
        emulator = LabOllamaProcess(models_dir=str(workdir / "models"), preload=[MODEL])
        emulator.start()
        redis_port, proxy_port = free_port(), free_port()
        redis_args = ["/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(redis_port)]
        redis_args += ["--save", "", "--appendonly", "no", "--dir", tmp]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VASTLLM_")}
        env.update(
            VASTLLM_HOST="127.0.0.1",
            VASTLLM_PORT=str(proxy_port),
            VASTLLM_OLLAMA_URL=emulator.url,
            VASTLLM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            VASTLLM_MODEL=MODEL,
            VASTLLM_LOG_LEVEL="WARNING",
        )
        env.update(dict(item.split("=", 1) for item in args.env))
        proxy_args = [sys.executable, "-m", "vastllm.proxy"]
        try:
            with (
                process(redis_args, dict(os.environ), redis_port, workdir / "redis.log"),
                process(proxy_args, env, proxy_port, workdir / "proxy.log") as pid,
            ):
                before = rss_mb(pid)
                print(f"proxy RSS before: {before:.1f} MB")
                result = asyncio.run(
                    load(proxy_port, args.answers, args.answer_kb * 1024, args.concurrency, pid)
                )
                time.sleep(1.0)
                after = rss_mb(pid)
                log_tail = (workdir / "proxy.log").read_text(errors="replace")[-2000:]
        finally:
            emulator.close()
    result.update(
        answers=args.answers,
        answer_kb=args.answer_kb,
        concurrency=args.concurrency,
        rss_before_mb=round(before, 1),
        rss_after_mb=round(after, 1),
        target_mb=args.target_mb,
        met=after <= args.target_mb,
    )
    print(json.dumps(result, indent=2))
    if log_tail.strip():
        print("proxy log (tail):\n" + log_tail)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())

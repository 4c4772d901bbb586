"""Record a real multi-turn Claude Code session against the proxy and the Ollama lab double.

Starts, all on 127.0.0.1: the Ollama lab double, the proxy (no Redis: every turn reaches the
double) and a small recording forwarder in front of the proxy. Then runs the real Claude Code
CLI in print mode for several turns of one conversation (`claude -p` then `claude -p
--continue`), with a throw-away HOME / CLAUDE_CONFIG_DIR / working directory, every other
HTTP(S) request sent to a closed loopback port. One turn names the `Glob` tool, so the double
answers it with a tool call, Claude Code runs the tool and sends its result back (a tool-use
turn: two requests).

Every request Claude Code sent is written, in order, with its path, the headers that say
something about the client (never the token) and the whole JSON body, to
`tests/data/claude_code_session/session.json.xz` (xz, not gzip: the ~110 kB of system prompt and
tools repeat in every request, further apart than gzip's 32 kB window — 38 kB instead of 360 kB),
and `meta.json` records the Claude Code version and the turns.

    PATH=$PWD/.cache/npm/node_modules/.bin:$PATH .venv/bin/python \
        benchmarks/record_claude_code_session.py [--out tests/data/claude_code_session]
        [--attribution-header-off]  (records with CLAUDE_CODE_ATTRIBUTION_HEADER=0, to check
                                     what it changes; prints a summary, writes nothing unless
                                     --out is given)

Run `--check` afterwards to print what changes between consecutive requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import lzma
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from vastllm_lab.ollama.process import LabOllamaProcess
from vastllm_lab.testing import claude_code_env, find_claude_code, free_port, run_claude

REPO = Path(__file__).resolve().parent.parent
MODEL = "qwen3-coder:30b"
TOKEN = "record-key-0123456789"
KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "user-agent", "x-app", "content-type")

# Session "a": the turns of one conversation. The double answers with a tool call when the last
# user message names an offered tool (as a whole word): the third turn is the tool-use turn
# (Claude Code 2.1.197 offers no Glob/Grep; Read needs no permission in print mode).
# Session "b": a fresh conversation in the same project, started after "a" (the warm-host case).
SESSIONS = {
    "a": (
        "Hello! I am starting a small Python project. Please reply briefly.",
        "What would be a good name for a module that parses configuration files?",
        "Use the Read tool to show me app.py.",
        "Thanks. Now suggest a function signature for loading the configuration.",
        "How should errors in the configuration be reported to the user?",
        "Summarize what we discussed in one sentence.",
    ),
    "b": (
        "A new question: how do I write a unit test for a command-line parser?",
        "And how would I test its error messages?",
    ),
}


class Recorder:
    """aiohttp forwarder: records every request, then relays it to the proxy and streams back."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.records: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k: request.headers[k] for k in KEPT_HEADERS if k in request.headers},
        }
        if raw:
            try:
                record["body"] = json.loads(raw)
            except ValueError:
                record["body_text"] = raw.decode("utf-8", "replace")
        self.records.append(record)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=raw, headers=headers
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            record["status"] = upstream.status
            return response

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await self._session.close()

    def start(self) -> Recorder:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def start_proxy(
    ollama_url: str, port: int, log: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The proxy on 127.0.0.1:port, no Redis, key TOKEN, model MODEL (also used by the replay
    benchmark)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VASTLLM_")}
    env.update(
        {
            "VASTLLM_HOST": "127.0.0.1",
            "VASTLLM_PORT": str(port),
            "VASTLLM_OLLAMA_URL": ollama_url,
            "VASTLLM_REDIS_URL": "",
            "VASTLLM_API_KEY": TOKEN,
            "VASTLLM_MODEL": MODEL,
        }
    )
    env.update(extra or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vastllm.proxy"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited:\n" + log.read_text(errors="replace"))
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveness", timeout=0.5)
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("proxy did not start:\n" + log.read_text(errors="replace"))


def claude_version(claude: str) -> str:
    out = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def claude_env(base_url: str, home: Path, attribution_off: bool) -> dict[str, str]:
    extra = {"CLAUDE_CODE_ATTRIBUTION_HEADER": "0"} if attribution_off else {}
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return claude_code_env(base_url, TOKEN, home, path=path, **extra)


def record(
    sessions: dict[str, tuple[str, ...]], attribution_off: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    claude = find_claude_code()
    if claude is None:
        raise SystemExit("claude is not on PATH (PATH=$PWD/.cache/npm/node_modules/.bin:$PATH)")
    version = claude_version(claude)
    with tempfile.TemporaryDirectory(prefix="cc-record-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        work = tmp / "project"
        home.mkdir()
        work.mkdir()
        (work / "app.py").write_text("print('hello')\n")
        with LabOllamaProcess(
            preload=[MODEL], log_dir=str(tmp), env={"OLLAMA_CONTEXT_LENGTH": "131072"}
        ) as emu:
            proxy_port = free_port()
            proxy = start_proxy(emu.url, proxy_port, tmp / "proxy.log")
            recorder = Recorder(f"http://127.0.0.1:{proxy_port}").start()
            results = []
            try:
                env = claude_env(recorder.url, home, attribution_off)
                for session, turns in sessions.items():
                    for index, text in enumerate(turns):
                        args = ["--max-turns", "3", "--model", "sonnet"]
                        if index:
                            args.insert(0, "--continue")
                        before = len(recorder.records)
                        done = run_claude(claude, text, args, env=env, cwd=work, timeout=300)
                        for rec in recorder.records[before:]:
                            rec["session"], rec["turn"] = session, index + 1
                        sent = len(recorder.records) - before
                        results.append(
                            {
                                "session": session,
                                "turn": index + 1,
                                "prompt": text,
                                "exit": done.returncode,
                                "stdout": done.stdout.strip()[-500:],
                                "requests": sent,
                            }
                        )
                        print(
                            f"{session} turn {index + 1}: exit {done.returncode}, {sent} "
                            f"request(s): {done.stdout.strip()[:100]}"
                        )
                        if done.returncode:
                            print(done.stderr[-2000:], file=sys.stderr)
            finally:
                recorder.stop()
                proxy.terminate()
                proxy.wait(10)
    meta = {
        "claude_code_version": version,
        "model": MODEL,
        "attribution_header_off": attribution_off,
        "turns": results,
    }
    return recorder.records, meta


def describe(records: list[dict[str, Any]]) -> None:
    """What each request is, and what its system prompt starts with."""
    for i, rec in enumerate(records):
        body = rec.get("body") or {}
        system = body.get("system")
        first = ""
        if isinstance(system, list) and system:
            first = system[0].get("text", "")[:90]
        msgs = body.get("messages") or []
        print(
            f"{i:2} {rec.get('session')}{rec.get('turn')} {rec['method']} {rec['path'][:40]:40} "
            f"model={body.get('model')} "
            f"msgs={len(msgs)} tools={len(body.get('tools') or [])} system0={first!r}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--attribution-header-off", action="store_true")
    args = parser.parse_args()
    out = args.out
    if out is None and not args.attribution_header_off:
        out = REPO / "tests/data/claude_code_session"
    records, meta = record(SESSIONS, args.attribution_header_off)
    describe(records)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        data = json.dumps(records, indent=1, ensure_ascii=False).encode()
        (out / "session.json.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {len(records)} requests to {out} ({meta['claude_code_version']})")
    return 0 if all(t["exit"] == 0 for t in meta["turns"]) else 1


if __name__ == "__main__":
    sys.exit(main())

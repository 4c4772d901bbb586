"""Replay a recorded Claude Code session through the proxy against the Ollama lab double's
prompt-evaluation model, and compare each turn's time to first token with the ideal.

The recording is tests/data/claude_code_session (benchmarks/record_claude_code_session.py):
session "a" (6 turns, the third a tool-use turn: 7 requests) and a fresh session "b" in the same
project (2 turns). The double runs with `prompt_tokens_per_second` (default 3000),
`generation_tokens_per_second` (60) and `prompt_cache_count`; the proxy without Redis (every
turn is a new prompt anyway). Each request is sent as Claude Code sent it, except that the
assistant turns of the history carry the answers the double gave in this replay (as a real client
would send back), so the prompt cache sees exactly what it would in a live session. The body is
JSON-encoded before the clock starts (the client's own serializing is not the server's time);
the clock runs from sending it to the first token of the proxy's SSE stream.

Ideal time to first token = new tokens / prompt rate + one generated token (1 / generation rate:
the double sends its first chunk one generation step after the evaluation), where "new tokens"
are those after the longest prefix any earlier request of the run left in a cache with unlimited
slots (its prompt + the text generated), counted with the double's own tokenizer; the "evaluated"
column is what the double really evaluated (/lab/stats). The double's own work on the request
before it starts the emulated evaluation (JSON, prompt rendering and tokenizing, slot choice: 2-4
ms of Python for the ~115 kB prompt, about a millisecond of Go in real Ollama) is measured by the
double itself for that very request (/lab/stats `work_ns`, the "double" column) and left out of
the ratio. Everything else stays in it: the client's and the proxy's loopback HTTP, the proxy's
work, the sleep overshoot; "over" is what that adds, in ms. Each scenario is also replayed
straight to the double, with the chat bodies the proxy sends (same prompts, same answers, so the
same cache and the same evaluated tokens): "direct" is that time to first token, and "proxy" =
ttft - direct is what the proxy itself adds (parsing and translating the request, the second
loopback hop of ~115 kB, relaying the first chunk as SSE).

Scenarios:
  single      OLLAMA_NUM_PARALLEL=1: session a, then session b on the warm host
  interleaved two sessions taking turns (a, and a copy of a whose typed prompts differ), with
              OLLAMA_NUM_PARALLEL 1 and 2

Targets: follow-up turns <= 1.1x ideal; the first turn of a fresh session on a warm host <= 1.2x.

    .venv/bin/python benchmarks/claude_code_replay_bench.py [--prompt-rate 3000] [--gen-rate 60]
        [--rounds 2] [--json PATH (default: claude_code_replay_results.json in the temp dir)]

Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import lzma
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from record_claude_code_session import MODEL, REPO, TOKEN, start_proxy
from vastllm.proxy.translate_request import build_chat, parse_request
from vastllm_lab.ollama.process import LabOllamaProcess
from vastllm_lab.ollama.prompt import common_prefix, render_prompt, tokenize
from vastllm_lab.testing import free_port

DATA = REPO / "tests/data/claude_code_session"
WINDOW = 65536  # the proxy's default VASTLLM_CONTEXT_WINDOW: the num_ctx it sends
FOLLOW_UP_LIMIT = 1.1
FRESH_WARM_LIMIT = 1.2


@dataclass
class Turn:
    scenario: str
    session: str
    turn: int
    request: int  # index of the request within its session
    prompt_tokens: int
    new_tokens: int  # the ideal: only these are evaluated
    evaluated: int  # what the double evaluated
    ttft_ms: float
    ideal_ms: float
    kind: str  # first (cold) | fresh-warm | follow-up
    double_ms: float  # the double's own work on this request (its /lab/stats work_ns)
    direct_ms: float = 0.0  # the same turn sent straight to the double (no proxy)

    @property
    def ratio(self) -> float:
        """Time to first token, less the double's own Python work, over the ideal."""
        return (self.ttft_ms - self.double_ms) / self.ideal_ms

    @property
    def over_ms(self) -> float:
        """What the rest of the path adds to the ideal: proxy, loopback HTTP, sleep overshoot."""
        return self.ttft_ms - self.double_ms - self.ideal_ms

    @property
    def proxy_ms(self) -> float:
        """What the proxy adds: time to first token through it less straight to the double."""
        return self.ttft_ms - self.direct_ms

    @property
    def raw_ratio(self) -> float:
        return self.ttft_ms / self.ideal_ms


def load_sessions() -> dict[str, list[dict[str, Any]]]:
    records = json.loads(lzma.decompress((DATA / "session.json.xz").read_bytes()))
    sessions: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["path"].startswith("/v1/messages") and "count" not in record["path"]:
            sessions.setdefault(record["session"], []).append(record)
    return sessions


def variant(records: list[dict[str, Any]], prompts: set[str], tag: str) -> list[dict[str, Any]]:
    """The same session with every typed prompt changed: another user's conversation."""

    def change(value: Any) -> Any:
        if isinstance(value, str):
            return value + f" ({tag})" if value in prompts else value
        if isinstance(value, list):
            return [change(v) for v in value]
        if isinstance(value, dict):
            return {k: change(v) for k, v in value.items()}
        return value

    out = []
    for record in records:
        record = copy.deepcopy(record)
        record["body"]["messages"] = change(record["body"]["messages"])
        out.append(record)
    return out


class Replayer:
    """Sends one session's requests in order, replacing the recorded assistant answers in the
    history by the answers of this replay."""

    def __init__(self, name: str, records: list[dict[str, Any]]) -> None:
        self.name = name
        self.records = records
        self.next = 0
        self.answers: list[tuple[int, list[dict[str, Any]]]] = []  # (message index, content)

    def body(self) -> dict[str, Any]:
        body = copy.deepcopy(self.records[self.next]["body"])
        messages = body["messages"]
        for index, content in self.answers:
            message = messages[index]
            assert message["role"] == "assistant", message
            if content and all(block["type"] == "text" for block in content):
                message["content"] = [{"type": "text", "text": "".join(b["text"] for b in content)}]
        return body

    def done(self, body: dict[str, Any], content: list[dict[str, Any]]) -> None:
        self.answers.append((len(body["messages"]), content))
        self.next += 1


def send(client: httpx.Client, body: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """(seconds to the first token, answer content blocks)."""
    content = orjson.dumps(body)
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    first = None
    blocks: list[dict[str, Any]] = []
    with client.stream(
        "POST", "/v1/messages?beta=true", content=content, headers=headers
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:500]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            kind = event["type"]
            if kind == "content_block_start":
                if first is None and event["content_block"]["type"] == "tool_use":
                    first = time.perf_counter()
                blocks.append(dict(event["content_block"]))
            elif kind == "content_block_delta":
                if first is None:
                    first = time.perf_counter()
                delta = event["delta"]
                if delta["type"] == "text_delta":
                    blocks[-1]["text"] = blocks[-1].get("text", "") + delta["text"]
            elif kind == "error":
                raise RuntimeError(f"error event: {event}")
    assert first is not None, "no token"
    return first - started, [b for b in blocks if b["type"] in ("text", "tool_use")]


def send_direct(client: httpx.Client, chat: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """The Ollama chat body straight to the double: (seconds to the first token, answer blocks
    as the proxy would have made them, for the history of the next turn)."""
    content = orjson.dumps(chat)
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    first = None
    text, calls = "", []
    with client.stream("POST", "/api/chat", content=content, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:500]!r}")
        for line in response.iter_lines():
            message = json.loads(line).get("message") or {}
            if first is None and (message.get("content") or message.get("tool_calls")):
                first = time.perf_counter()
            text += message.get("content") or ""
            calls += message.get("tool_calls") or []
    assert first is not None, "no token"
    blocks = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "name": c["function"]["name"]} for c in calls]
    return first - started, blocks


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    """The Ollama chat body the proxy sends for this request (default window, no thinking)."""
    request = parse_request(body)
    return build_chat(request, MODEL, stream=True, supports_thinking=False, num_ctx=WINDOW)


def double_tokens(chat: dict[str, Any]) -> list[str]:
    """The prompt tokens the double evaluates for this chat body."""
    return tokenize(render_prompt(chat["messages"], chat.get("tools") or []))


@contextmanager
def stack(
    parallel: int, prompt_rate: float, gen_rate: float, tmp: Path, direct: bool
) -> Iterator[httpx.Client]:
    """A double with the rates (and the proxy in front of it, unless `direct`): a client."""
    faults = {
        "prompt_tokens_per_second": prompt_rate,
        "generation_tokens_per_second": gen_rate,
        "prompt_cache_count": True,
    }
    env = {"OLLAMA_NUM_PARALLEL": str(parallel), "OLLAMA_CONTEXT_LENGTH": "131072"}
    with LabOllamaProcess(preload=[MODEL], faults=faults, env=env, log_dir=str(tmp)) as emu:
        if direct:
            with httpx.Client(base_url=emu.url, timeout=600) as client:
                client.emu = emu  # type: ignore[attr-defined]
                yield client
            return
        port = free_port()
        proxy = start_proxy(emu.url, port, tmp / f"proxy-{port}.log")
        try:
            headers = {"authorization": f"Bearer {TOKEN}", "anthropic-version": "2023-06-01"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600
            ) as client:
                client.emu = emu  # type: ignore[attr-defined]
                yield client
        finally:
            proxy.terminate()
            proxy.wait(10)


def counters(emu: LabOllamaProcess) -> tuple[int, int]:
    """(tokens evaluated, ns of the double's own work) so far, over every slot."""
    slots = emu.slots().get(MODEL, [])
    return (
        sum(slot["evaluated_tokens"] for slot in slots),
        sum(slot["work_ns"] for slot in slots),
    )


def run(
    scenario: str,
    order: list[Replayer],
    parallel: int,
    prompt_rate: float,
    gen_rate: float,
    tmp: Path,
    direct: bool = False,
) -> list[Turn]:
    """One replay, through the proxy (or `direct`ly to the double, as the proxy would send it)."""
    turns: list[Turn] = []
    caches: list[list[str]] = []  # what an unlimited prompt cache would hold
    with stack(parallel, prompt_rate, gen_rate, tmp, direct) as client:
        emu = client.emu  # type: ignore[attr-defined]
        for replayer in order:
            body = replayer.body()
            chat = chat_of(body)
            tokens = double_tokens(chat)
            reused = max((common_prefix(c, tokens) for c in caches), default=0)
            new = max(len(tokens) - reused, 1)
            before = counters(emu)
            seconds, content = send_direct(client, chat) if direct else send(client, body)
            after = counters(emu)
            record = replayer.records[replayer.next]
            kind = "follow-up" if replayer.next else "fresh-warm" if caches else "first (cold)"
            turns.append(
                Turn(
                    scenario=scenario,
                    session=replayer.name,
                    turn=record["turn"],
                    request=replayer.next + 1,
                    prompt_tokens=len(tokens),
                    new_tokens=new,
                    evaluated=after[0] - before[0],
                    ttft_ms=seconds * 1000,
                    ideal_ms=(new / prompt_rate + 1 / gen_rate) * 1000,
                    kind=kind,
                    double_ms=(after[1] - before[1]) / 1e6,
                )
            )
            text = "".join(b.get("text", "") for b in content if b["type"] == "text")
            caches.append(tokens + tokenize(text))
            replayer.done(body, content)
    return turns


def table(turns: list[Turn]) -> str:
    head = (
        f"{'scenario':<17}{'sess':>4} {'turn':>4}{'req':>4}{'prompt':>8}{'new':>7}{'eval':>7}"
        f"{'ttft ms':>10}{'ideal ms':>10}{'double':>7}{'over':>7}{'direct':>8}{'proxy':>7}"
        f"{'ratio':>7}  kind"
    )
    lines = [head, "-" * len(head)]
    for t in turns:
        lines.append(
            f"{t.scenario:<17}{t.session:>4} {t.turn:>4}{t.request:>4}{t.prompt_tokens:>8}"
            f"{t.new_tokens:>7}{t.evaluated:>7}{t.ttft_ms:>10.1f}{t.ideal_ms:>10.1f}"
            f"{t.double_ms:>7.1f}{t.over_ms:>7.1f}{t.direct_ms:>8.1f}{t.proxy_ms:>7.1f}"
            f"{t.ratio:>7.2f}  {t.kind}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompt-rate", type=float, default=3000.0)
    parser.add_argument("--gen-rate", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2, help="best of N replays per scenario")
    parser.add_argument(
        "--json", type=Path, default=Path(tempfile.gettempdir()) / "claude_code_replay_results.json"
    )
    args = parser.parse_args()
    sessions = load_sessions()
    meta = json.loads((DATA / "meta.json").read_text())
    prompts = {t["prompt"] for t in meta["turns"]}
    rates = (args.prompt_rate, args.gen_rate)
    other = variant(sessions["a"], prompts, "project B")

    def single() -> list[Replayer]:
        a, b = Replayer("a", sessions["a"]), Replayer("b", sessions["b"])
        return [a] * len(a.records) + [b] * len(b.records)

    def interleaved() -> list[Replayer]:
        a, c = Replayer("a", sessions["a"]), Replayer("a'", other)
        pairs = zip([a] * len(a.records), [c] * len(c.records), strict=True)
        return [replayer for pair in pairs for replayer in pair]

    scenarios = [("single np=1", single, 1)]
    scenarios += [(f"interleaved np={n}", interleaved, n) for n in (1, 2)]
    all_turns: list[Turn] = []
    with tempfile.TemporaryDirectory(prefix="cc-replay-") as tmp_name:
        tmp = Path(tmp_name)
        for name, make, parallel in scenarios:
            best = run(name, make(), parallel, *rates, tmp)
            direct = run(name, make(), parallel, *rates, tmp, direct=True)
            for _ in range(args.rounds - 1):  # best of rounds: a shared machine disturbs runs
                again = run(name, make(), parallel, *rates, tmp)
                for index, other_turn in enumerate(again):
                    if other_turn.ttft_ms < best[index].ttft_ms:
                        best[index] = other_turn  # with that round's own double work
                again = run(name, make(), parallel, *rates, tmp, direct=True)
                for index, other_turn in enumerate(again):
                    direct[index].ttft_ms = min(direct[index].ttft_ms, other_turn.ttft_ms)
            for turn, straight in zip(best, direct, strict=True):
                assert straight.evaluated == turn.evaluated, (turn, straight)  # same cache
                turn.direct_ms = straight.ttft_ms
            all_turns += best
    print(
        f"Claude Code {meta['claude_code_version']}; prompt {args.prompt_rate:g} tokens/s, "
        f"generation {args.gen_rate:g} tokens/s, best of {args.rounds}; ideal = new / prompt "
        "rate + 1 / generation rate; ratio = (ttft - double) / ideal; over = ttft - double - "
        "ideal; direct = ttft straight to the double; proxy = ttft - direct (all ms)\n"
    )
    print(table(all_turns))
    print("\nFollow-up turns, median ms:")
    for scenario in dict.fromkeys(t.scenario for t in all_turns):
        follow = [t for t in all_turns if t.scenario == scenario and t.kind == "follow-up"]
        print(
            f"  {scenario:<17} ideal {statistics.median(t.ideal_ms for t in follow):5.1f}  "
            f"double {statistics.median(t.double_ms for t in follow):4.1f}  "
            f"over {statistics.median(t.over_ms for t in follow):5.1f}  "
            f"direct - double - ideal "
            f"{statistics.median(t.direct_ms - t.double_ms - t.ideal_ms for t in follow):5.1f}  "
            f"proxy {statistics.median(t.proxy_ms for t in follow):5.1f}"
        )
    # Targets. Tokens: each follow-up evaluates only its new tokens (exact, from /lab/stats).
    # Time: per group, sum(ttft - double) / sum(ideal): one turn's ideal is ~20 ms, so a single
    # scheduling hiccup on a shared machine would decide a per-turn check.
    checks: list[tuple[str, float, float]] = []
    groups: dict[str, list[Turn]] = {}
    for t in all_turns:
        if t.kind == "follow-up":
            checks.append(
                (
                    f"{t.scenario} {t.session} req {t.request}: evaluated / new tokens",
                    t.evaluated / t.new_tokens,
                    1.0 if t.scenario != "interleaved np=1" else 99.0,
                )
            )
            groups.setdefault(f"{t.scenario}: follow-up turns, time", []).append(t)
        elif t.kind == "fresh-warm" and t.scenario.startswith("single"):
            groups.setdefault(f"{t.scenario}: fresh session on a warm host, time", []).append(t)
    for name, group in groups.items():
        ratio = sum(t.ttft_ms - t.double_ms for t in group) / sum(t.ideal_ms for t in group)
        limit = FRESH_WARM_LIMIT if "fresh" in name else FOLLOW_UP_LIMIT
        if "np=1" in name and name.startswith("interleaved"):
            limit = float("inf")  # reported, not a target: one slot cannot hold two sessions
        checks.append((name, ratio, limit))
    print()
    ok = True
    for name, value, limit in checks:
        passed = value <= limit
        ok &= passed
        shown = "report only" if limit == float("inf") else f"<= {limit}x"
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value:.2f}x ({shown})")
    args.json.write_text(
        json.dumps(
            {
                "claude_code_version": meta["claude_code_version"],
                "prompt_rate": args.prompt_rate,
                "generation_rate": args.gen_rate,
                "rounds": args.rounds,
                "turns": [
                    asdict(t) | {"ratio": t.ratio, "raw_ratio": t.raw_ratio} for t in all_turns
                ],
                "checks": [
                    {"name": n, "value": v, "limit": None if lim == float("inf") else lim}
                    for n, v, lim in checks
                ],
            },
            indent=1,
        )
    )
    print(f"\nJSON: {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

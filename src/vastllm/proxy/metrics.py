"""Prometheus text-format metrics, kept in plain dicts (no client library, no locks: one loop)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        lines: list[str] = []
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.total:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class Metrics:
    requests: defaultdict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    cache: dict[str, int] = field(default_factory=lambda: {"hit": 0, "miss": 0, "bypass": 0})
    latency: defaultdict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    ttft: Histogram = field(default_factory=Histogram)
    input_tokens: int = 0
    output_tokens: int = 0
    upstream_errors: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Tool calls the model wrote as text and the proxy turned into tool_use, by form.
    rescued: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("xml", "xml_wrapped", "json"), 0)
    )

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route].observe(seconds)

    def record_cache(self, result: str) -> None:
        self.cache[result] += 1

    def record_tokens(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def record_upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] += 1

    def record_rescue(self, form: str) -> None:
        self.rescued[form] = self.rescued.get(form, 0) + 1

    @property
    def hit_ratio(self) -> float:
        looked_up = self.cache["hit"] + self.cache["miss"]
        return self.cache["hit"] / looked_up if looked_up else 0.0

    def render(self) -> bytes:
        out: list[str] = [
            "# HELP vastllm_requests_total Requests answered, by route and HTTP status.",
            "# TYPE vastllm_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            out.append(
                f'vastllm_requests_total{{route="{_escape(route)}",status="{status}"}} {count}'
            )
        out += [
            "# HELP vastllm_cache_requests_total Cache lookups by result (hit, miss, bypass).",
            "# TYPE vastllm_cache_requests_total counter",
        ]
        for result, count in self.cache.items():
            out.append(f'vastllm_cache_requests_total{{result="{result}"}} {count}')
        out += [
            "# HELP vastllm_cache_hit_ratio Hits / (hits + misses) since start.",
            "# TYPE vastllm_cache_hit_ratio gauge",
            f"vastllm_cache_hit_ratio {self.hit_ratio:.6f}",
            "# HELP vastllm_request_duration_seconds Time from request to the end of the answer.",
            "# TYPE vastllm_request_duration_seconds histogram",
        ]
        for route, histogram in sorted(self.latency.items()):
            out += histogram.render("vastllm_request_duration_seconds", f'route="{_escape(route)}"')
        out += [
            "# HELP vastllm_time_to_first_token_seconds Time from request to the first token.",
            "# TYPE vastllm_time_to_first_token_seconds histogram",
            *self.ttft.render("vastllm_time_to_first_token_seconds", ""),
            "# HELP vastllm_input_tokens_total Prompt tokens reported by the backend.",
            "# TYPE vastllm_input_tokens_total counter",
            f"vastllm_input_tokens_total {self.input_tokens}",
            "# HELP vastllm_output_tokens_total Generated tokens reported by the backend.",
            "# TYPE vastllm_output_tokens_total counter",
            f"vastllm_output_tokens_total {self.output_tokens}",
            "# HELP vastllm_upstream_errors_total Ollama failures by kind.",
            "# TYPE vastllm_upstream_errors_total counter",
        ]
        for kind, count in sorted(self.upstream_errors.items()):
            out.append(f'vastllm_upstream_errors_total{{kind="{_escape(kind)}"}} {count}')
        out += [
            "# HELP vastllm_tool_calls_rescued_total Tool calls written as text, turned into"
            " tool_use, by form (xml, xml_wrapped, json).",
            "# TYPE vastllm_tool_calls_rescued_total counter",
        ]
        for form, count in self.rescued.items():
            out.append(f'vastllm_tool_calls_rescued_total{{form="{_escape(form)}"}} {count}')
        return ("\n".join(out) + "\n").encode()

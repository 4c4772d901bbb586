# -*- coding: utf-8 -*-
# Copyright: vastllm contributors
# Apache-2.0
# ruff: noqa: ANN001, ANN201, ANN202, ANN003, RUF005
"""Filters of verify.yml and diagnose.yml: parse what playbooks/files/vastllm_probe.py saw on a host
(Prometheus text of the proxy's /metrics, /health, /api/tags, /api/ps, the monitor's report,
supervisorctl status) and turn it into figures against targets, findings in plain words, Markdown.
Pure functions over plain data: unit-tested in tests/unit/filter/test_health_filters.py."""

from __future__ import annotations

import re

# The seed's success criteria (targets verify.yml measures against), overridable per call.
DEFAULT_TARGETS = {
    "hit_ratio_min": 0.70,
    "hit_seconds_max": 1.0,
    "miss_seconds_max": 10.0,
    "model_ready_seconds_max": 120.0,
    "uptime_min": 0.95,
    # fewer cache lookups than this since the proxy started: the hit ratio says nothing yet
    "hit_ratio_min_lookups": 20,
    # uptime is a long-run figure: judged once the monitor's records span this many seconds
    "uptime_min_span_seconds": 3600,
}

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_parse(text):
    """Prometheus text exposition -> {metric name: [{"labels": {...}, "value": float}]}."""
    out = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\")
            for k, v in _LABEL.findall(match.group("labels") or "")
        }
        out.setdefault(match.group("name"), []).append({"labels": labels, "value": value})
    return out


def prometheus_value(parsed, name, **labels):
    """Sum of the samples of ``name`` whose labels include ``labels`` (0.0 when none)."""
    total = 0.0
    for sample in (parsed or {}).get(name, []):
        if all(sample["labels"].get(k) == v for k, v in labels.items()):
            total += sample["value"]
    return total


def _json(section):
    return (section or {}).get("json") or {}


def _model_names(tags):
    return [str(m.get("name") or m.get("model")) for m in _json(tags).get("models") or []]


def _same_model(a, b):
    def norm(name):
        name = (name or "").lower()
        return name if ":" in name else name + ":latest"

    return norm(a) == norm(b)


def _figure(name, target, measured, ok, unit="", note=""):
    return {
        "name": name,
        "target": target,
        "measured": measured,
        "ok": ok,
        "unit": unit,
        "note": note,
    }


def verify_figures(probe, model="", ready_seconds=None, targets=None):
    """Figures verify.yml reports: {name, target, measured, ok (true/false/null), unit, note}."""
    t = dict(DEFAULT_TARGETS)
    t.update(targets or {})
    health = _json((probe.get("proxy") or {}).get("health"))
    model = model or (health.get("model") or {}).get("name") or ""
    listed = _model_names((probe.get("ollama") or {}).get("tags"))
    loaded = _model_names((probe.get("ollama") or {}).get("ps"))
    figures = [
        _figure(
            "model listed",
            model,
            model in listed or any(_same_model(model, n) for n in listed),
            bool(model) and any(_same_model(model, n) for n in listed),
            note=", ".join(listed),
        ),
        _figure(
            "model loaded",
            model,
            any(_same_model(model, n) for n in loaded),
            bool(model) and any(_same_model(model, n) for n in loaded),
            note=", ".join(loaded),
        ),
    ]
    version = (probe.get("ollama") or {}).get("version") or {}
    figures.append(
        _figure(
            "Ollama healthy",
            "answers /api/version",
            version.get("status") == 200,
            version.get("status") == 200,
            note=_json(version).get("version", ""),
        )
    )
    redis = health.get("redis") or {}
    if redis.get("enabled") is False:
        figures.append(_figure("Redis healthy", "reachable", None, None, note="cache disabled"))
    else:
        figures.append(
            _figure(
                "Redis healthy",
                "reachable",
                redis.get("reachable") is True,
                redis.get("reachable") is True,
            )
        )
    liveness = (probe.get("proxy") or {}).get("liveness") or {}
    proxy_ok = liveness.get("status") == 200 and health.get("status") == "ok"
    figures.append(_figure("proxy healthy", "ok", health.get("status") or "down", proxy_ok))
    messages = probe.get("messages") or [{}, {}]
    miss, hit = (messages + [{}, {}])[:2]
    answered = miss.get("status") == 200 and bool((miss.get("text") or "").strip())
    figures.append(
        _figure(
            "valid answer via /v1/messages",
            "HTTP 200, text",
            "HTTP %s" % miss.get("status"),
            answered,
            note=(miss.get("text") or miss.get("error") or "")[:80],
        )
    )
    figures.append(
        _figure(
            "repeat answered from cache",
            "hit",
            hit.get("cache") or "none",
            hit.get("cache") == "hit",
        )
    )
    figures.append(
        _figure(
            "miss latency",
            t["miss_seconds_max"],
            miss.get("seconds"),
            answered and (miss.get("seconds") or 0) < t["miss_seconds_max"],
            "s",
            note="x-cache: %s" % (miss.get("cache") or "none"),
        )
    )
    figures.append(
        _figure(
            "hit latency",
            t["hit_seconds_max"],
            hit.get("seconds"),
            hit.get("cache") == "hit" and (hit.get("seconds") or 0) < t["hit_seconds_max"],
            "s",
        )
    )
    parsed = prometheus_parse(((probe.get("proxy") or {}).get("metrics") or {}).get("text", ""))
    hits = prometheus_value(parsed, "vastllm_cache_requests_total", result="hit")
    misses = prometheus_value(parsed, "vastllm_cache_requests_total", result="miss")
    lookups = hits + misses
    if not parsed:
        figures.append(
            _figure(
                "cache hit ratio since start",
                t["hit_ratio_min"],
                None,
                None,
                note="/metrics not readable",
            )
        )
    elif lookups < t["hit_ratio_min_lookups"]:
        figures.append(
            _figure(
                "cache hit ratio since start",
                t["hit_ratio_min"],
                round(hits / lookups, 3) if lookups else None,
                None,
                note="only %d cache lookups since start (needs %d)"
                % (lookups, t["hit_ratio_min_lookups"]),
            )
        )
    else:
        ratio = hits / lookups
        figures.append(
            _figure(
                "cache hit ratio since start",
                t["hit_ratio_min"],
                round(ratio, 3),
                ratio > t["hit_ratio_min"],
                note="%d hits / %d lookups" % (hits, lookups),
            )
        )
    if ready_seconds in (None, "", "None"):
        figures.append(
            _figure(
                "model ready time",
                t["model_ready_seconds_max"],
                None,
                None,
                "s",
                note="known in the run that installed the model (site.yml)",
            )
        )
    else:
        ready = float(ready_seconds)
        figures.append(
            _figure(
                "model ready time",
                t["model_ready_seconds_max"],
                ready,
                ready < t["model_ready_seconds_max"],
                "s",
            )
        )
    report = _json(probe.get("monitor_report"))
    uptime = (report.get("uptime") or {}).get("fraction")
    if not report:
        figures.append(
            _figure(
                "uptime (24 h, monitor)",
                t["uptime_min"],
                None,
                False,
                note="no monitor report: %s"
                % (probe.get("monitor_report") or {}).get("stderr", "")[:120],
            )
        )
    elif uptime is None:
        figures.append(
            _figure(
                "uptime (24 h, monitor)", t["uptime_min"], None, None, note="no rounds recorded yet"
            )
        )
    else:
        up = report.get("uptime") or {}
        span = float(up.get("last_ts") or 0) - float(up.get("first_ts") or 0)
        note = "%d rounds over %.0f min, coverage %s" % (
            up.get("rounds", 0),
            span / 60,
            up.get("coverage"),
        )
        if span < t["uptime_min_span_seconds"]:
            ok = None
            note += " (judged once the records span %d min)" % (t["uptime_min_span_seconds"] // 60)
        else:
            ok = uptime > t["uptime_min"]
        figures.append(_figure("uptime (24 h, monitor)", t["uptime_min"], uptime, ok, note=note))
    return figures


def verify_failed(figures):
    """Names of the figures that miss their target (no data is not a miss)."""
    return [f["name"] for f in figures if f.get("ok") is False]


def verify_lines(figures):
    """One line per figure: '[ ok ] miss latency: 0.41 s (target < 10 s)'."""
    lines = []
    for f in figures:
        mark = {True: " ok ", False: "FAIL", None: " -- "}[f.get("ok")]
        unit = (" " + f["unit"]) if f.get("unit") else ""
        measured = "n/a" if f.get("measured") is None else f["measured"]
        if isinstance(f.get("target"), (int, float)) and not isinstance(f.get("target"), bool):
            cmp = ">" if f["name"].startswith(("cache hit ratio", "uptime")) else "<"
            target = "%s %s%s" % (cmp, f["target"], unit)
        else:
            target = str(f.get("target"))
        note = (" — " + f["note"]) if f.get("note") else ""
        lines.append(
            "[%s] %s: %s%s (target %s)%s" % (mark, f["name"], measured, unit, target, note)
        )
    return lines


_SUPERVISOR = re.compile(r"^(?P<name>\S+)\s+(?P<state>[A-Z]+)\s*(?P<rest>.*)$")


def supervisor_status(text):
    """`supervisorctl status` -> {program: {"state": "RUNNING", "detail": "pid 1, ..."}}."""
    out = {}
    for line in (text or "").splitlines():
        match = _SUPERVISOR.match(line.strip())
        if match:
            out[match.group("name")] = {
                "state": match.group("state"),
                "detail": match.group("rest").strip(),
            }
    return out


def diagnose_findings(probe, programs=None, disk_warn_pct=90.0):
    """Plain-words findings: the monitor's (history, restarts) plus what the probe saw right now."""
    found = []
    report = _json(probe.get("monitor_report"))
    check = _json(probe.get("monitor_check"))
    services = supervisor_status((probe.get("services") or {}).get("stdout", ""))
    for program in programs or []:
        state = (services.get(program) or {}).get("state")
        if services and state != "RUNNING":
            found.append("%s is %s" % (program, (state or "not defined").lower()))
    version = (probe.get("ollama") or {}).get("version") or {}
    generation = (check.get("checks") or {}).get("generation") or {}
    if version.get("status") != 200:
        found.append(
            "Ollama does not answer /api/version (%s)" % (version.get("error") or "down")[:120]
        )
    elif generation.get("status") == "failed":
        found.append(
            "Ollama answers but generation fails (%s)" % (generation.get("error") or "error")[:160]
        )
    health = _json((probe.get("proxy") or {}).get("health"))
    model = (health.get("model") or {}).get("name") or generation.get("model") or ""
    listed = _model_names((probe.get("ollama") or {}).get("tags"))
    if version.get("status") == 200 and model and not any(_same_model(model, n) for n in listed):
        found.append("the model %s is missing from Ollama" % model)
    redis = health.get("redis") or {}
    if redis.get("enabled") and not redis.get("reachable"):
        found.append("Redis is down: the proxy answers uncached")
    if ((probe.get("proxy") or {}).get("liveness") or {}).get("status") != 200:
        found.append("the proxy does not answer /health/liveness")
    elif health.get("status") and health.get("status") != "ok":
        found.append("the proxy reports %s" % health.get("status"))
    for disk in probe.get("disk") or []:
        if disk.get("used_pct", 0) >= disk_warn_pct:
            found.append(
                "%s %d %% full (%.1f GB free)"
                % (disk["path"], disk["used_pct"], disk["free_bytes"] / 1e9)
            )
    memory = probe.get("memory") or {}
    if (memory.get("used_pct") or 0) >= 95:
        found.append("memory %d %% used" % memory["used_pct"])
    for item in report.get("findings") or []:
        # the monitor's view of the last round duplicates the live checks above; keep its history
        if re.search(r"restarted \d+ time|record is .* old|has recorded nothing", item):
            found.append(item)
    if not report:
        found.append(
            "no monitor report (%s)"
            % ((probe.get("monitor_report") or {}).get("stderr") or "")[:120]
        )
    configured = (health.get("context_window") or {}).get("configured")
    loaded = [
        m.get("context_length")
        for m in _json((probe.get("ollama") or {}).get("ps")).get("models") or []
    ]
    if configured and loaded and any(n and n < configured for n in loaded):
        found.append(
            "the loaded context length %s is below the configured %s" % (loaded, configured)
        )
    out = []
    for item in found:
        if item not in out:
            out.append(item)
    return out


def _table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return lines


def diagnose_markdown(doc):
    """The diagnose report (the dict diagnose.yml saves as JSON) as Markdown."""
    probe = doc.get("probe") or {}
    lines = [
        "# vastllm diagnosis of %s" % doc.get("host"),
        "",
        "Time: %s" % doc.get("time"),
        "",
        "## Findings",
        "",
    ]
    lines += ["- " + f for f in doc.get("findings") or []] or ["- none"]
    lines += ["", "## Services", ""]
    services = supervisor_status((probe.get("services") or {}).get("stdout", ""))
    if services:
        lines += _table(
            [(k, v["state"], v["detail"]) for k, v in sorted(services.items())],
            ["program", "state", "detail"],
        )
    else:
        lines += ["```", (probe.get("services") or {}).get("stdout", "").strip(), "```"]
    report = _json(probe.get("monitor_report"))
    restarts = report.get("restarts") or {}
    lines += [
        "",
        "Restarts by the monitor: last hour %s, 24 h %s."
        % (
            (restarts.get("last_hour") or {}).get("by_component", {}),
            (restarts.get("window") or {}).get("by_component", {}),
        ),
    ]
    health = _json((probe.get("proxy") or {}).get("health"))
    ollama = probe.get("ollama") or {}
    lines += ["", "## Versions", ""] + _table(
        [
            ("Ollama", _json(ollama.get("version")).get("version", "down")),
            ("Ollama binary", (probe.get("versions") or {}).get("ollama", "")),
            ("proxy", health.get("version", "down")),
            ("Redis", (probe.get("versions") or {}).get("redis", "")),
            ("monitor", ((report.get("last_record") or {}).get("version") or "")),
        ],
        ["component", "version"],
    )
    lines += [
        "",
        "## Models",
        "",
        "`/api/tags`: " + (", ".join(_model_names(ollama.get("tags"))) or "none"),
    ]
    ps = _json(ollama.get("ps")).get("models") or []
    lines += [
        "",
        "`/api/ps`: "
        + (
            ", ".join(
                "%s (context %s, %.1f GB VRAM)"
                % (m.get("name"), m.get("context_length"), (m.get("size_vram") or 0) / 1e9)
                for m in ps
            )
            or "none loaded"
        ),
    ]
    window = health.get("context_window") or {}
    lines += [
        "",
        "Context length: configured %s, served %s, loaded %s."
        % (window.get("configured"), window.get("served"), window.get("loaded")),
    ]
    lines += ["", "## Disk and memory", ""] + _table(
        [
            (
                d["path"],
                "%.1f GB" % (d["total_bytes"] / 1e9),
                "%.1f GB" % (d["free_bytes"] / 1e9),
                "%s %%" % d["used_pct"],
            )
            for d in probe.get("disk") or []
        ],
        ["path", "size", "free", "used"],
    )
    memory = probe.get("memory") or {}
    if memory:
        lines += [
            "",
            "Memory: %.1f GB total, %.1f GB available (%s %% used)."
            % (
                memory.get("total_bytes", 0) / 1e9,
                memory.get("available_bytes", 0) / 1e9,
                memory.get("used_pct"),
            ),
        ]
    gpu = probe.get("gpu")
    lines += ["", "## GPU", ""]
    if not gpu:
        lines.append("no nvidia-smi (CPU mode)")
    else:
        rows = [
            [c.strip() for c in line.split(",")]
            for line in gpu.get("stdout", "").splitlines()
            if line.strip()
        ]
        lines += _table(
            [
                (r[0], r[1], "%s / %s MiB" % (r[2], r[3]), "%s %%" % r[4])
                for r in rows
                if len(r) >= 5
            ],
            ["index", "name", "memory used / total", "utilization"],
        )
    lines += ["", "## Listening ports", ""] + _table(
        [(p["address"], p["port"]) for p in probe.get("ports") or []], ["address", "port"]
    )
    uptime = report.get("uptime") or {}
    lines += [
        "",
        "## Monitor",
        "",
        "Uptime (24 h): %s %% over %s rounds (coverage %s)."
        % (uptime.get("percent"), uptime.get("rounds"), uptime.get("coverage")),
    ]
    for item in (restarts.get("recent") or [])[-5:]:
        lines.append(
            "- %s restarted at %s: %s (%s)"
            % (
                item.get("component"),
                item.get("time"),
                item.get("reason"),
                "ok" if (item.get("result") or {}).get("ok") else "failed",
            )
        )
    check = _json(probe.get("monitor_check"))
    if check:
        lines += [
            "",
            "Fresh round: up=%s, actions %s." % (check.get("up"), check.get("actions") or "none"),
        ]
    lines += ["", "## Logs (last lines)", ""]
    for program, log in sorted((probe.get("logs") or {}).items()):
        lines += ["### %s" % program, "", "```"] + [line[:300] for line in log] + ["```", ""]
    return "\n".join(lines) + "\n"


class FilterModule(object):
    """vastllm health filters."""

    def filters(self):
        return {
            "prometheus_parse": prometheus_parse,
            "verify_figures": verify_figures,
            "verify_failed": verify_failed,
            "verify_lines": verify_lines,
            "supervisor_status": supervisor_status,
            "diagnose_findings": diagnose_findings,
            "diagnose_markdown": diagnose_markdown,
        }

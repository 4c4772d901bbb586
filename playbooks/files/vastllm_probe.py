# ruff: noqa: ANN001, ANN201, ANN202, UP022, UP031, RUF005
# (runs with the host's python3, 3.8 or later: no annotations, plain formatting)
"""Read-only probe of a vastllm host, run there by verify.yml and diagnose.yml (script module).

Prints one JSON object with what it saw; parsing and verdicts happen on the controller (the filter
plugins vastllm.stack.vastllm_*). Standard library only, Python >= 3.8. The proxy's API key is read
from its file here on the host and only sent to the proxy: it never appears in the output.

    vastllm_probe.py '<json settings>'
settings: mode (verify|diagnose), ollama_url, proxy_url, key_file, model, monitor (argv prefix),
programs (names), supervisorctl (argv), log_dir, log_lines, disk_paths.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request


def http(url, data=None, headers=None, timeout=30.0):
    """(status, headers, body text, seconds) of one request; status -1 with the error when none."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    if body is not None:
        request.add_header("content-type", "application/json")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode("utf-8", "replace")
            return answer.status, dict(answer.headers), text, time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        return exc.code, dict(exc.headers or {}), text, time.perf_counter() - started
    except Exception as exc:
        return -1, {}, "%s: %s" % (type(exc).__name__, exc), time.perf_counter() - started


def get_json(url, headers=None, timeout=10.0):
    status, _, text, seconds = http(url, headers=headers, timeout=timeout)
    out = {"status": status, "ms": round(seconds * 1000, 1)}
    try:
        out["json"] = json.loads(text) if status == 200 else None
    except ValueError:
        out["json"] = None
    if status != 200:
        out["error"] = text[-300:]
    return out


def run(argv, timeout=60):
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": -1, "stdout": "", "stderr": str(exc)}
    return {
        "rc": done.returncode,
        "stdout": done.stdout.decode("utf-8", "replace")[-20000:],
        "stderr": done.stderr.decode("utf-8", "replace")[-2000:],
    }


def run_json(argv, timeout=60):
    result = run(argv, timeout)
    try:
        result["json"] = json.loads(result["stdout"])
    except ValueError:
        result["json"] = None
    result["stdout"] = result["stdout"][-2000:]
    return result


def read_key(path):
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def message(proxy_url, key, prompt):
    headers = {"anthropic-version": "2023-06-01"}
    if key:
        headers["x-api-key"] = key
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": prompt}],
    }
    status, answer_headers, text, seconds = http(
        proxy_url + "/v1/messages", body, headers, timeout=120
    )
    lowered = {k.lower(): v for k, v in answer_headers.items()}
    answer = ""
    try:
        doc = json.loads(text)
        answer = "".join(
            part.get("text", "") for part in doc.get("content", []) if isinstance(part, dict)
        )
    except (ValueError, AttributeError):
        pass
    return {
        "status": status,
        "cache": lowered.get("x-cache", ""),
        "seconds": round(seconds, 3),
        "text": answer[:200],
        "error": "" if status == 200 else text[-300:].replace(key, "***") if key else text[-300:],
    }


def disk(path):
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    total = stat.f_blocks * stat.f_frsize
    free = stat.f_bavail * stat.f_frsize
    used = total - stat.f_bfree * stat.f_frsize
    pct = 100.0 * used / (used + free) if used + free else 0.0
    return {"path": path, "total_bytes": total, "free_bytes": free, "used_pct": round(pct, 1)}


def meminfo():
    out = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        return None
    total, available = out.get("MemTotal", 0), out.get("MemAvailable", 0)
    pct = round(100.0 * (total - available) / total, 1) if total else None
    return {"total_bytes": total, "available_bytes": available, "used_pct": pct}


def listening():
    """(address, port) pairs in LISTEN state from /proc/net/tcp{,6}."""
    found = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(name, encoding="utf-8") as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":
                continue
            address, port = fields[1].split(":")
            found.append({"address": _address(address, width), "port": int(port, 16)})
    return sorted(found, key=lambda item: (item["port"], item["address"]))


def _address(hexed, width):
    raw = bytes.fromhex(hexed)
    if width == 8:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    full = b"".join(words)
    if full[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in full[12:])
    groups = ["%x" % int.from_bytes(full[i : i + 2], "big") for i in range(0, 16, 2)]
    text = ":".join(groups)
    return "::" if text == "0:0:0:0:0:0:0:0" else ("::1" if text == "0:0:0:0:0:0:0:1" else text)


def tail(path, lines):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return data.splitlines()[-lines:]


def probe(settings):
    ollama = settings["ollama_url"].rstrip("/")
    proxy = settings["proxy_url"].rstrip("/")
    key = read_key(settings.get("key_file", ""))
    auth = {"x-api-key": key} if key else {}
    out = {"mode": settings["mode"], "time": time.time()}
    if settings["mode"] == "verify":
        # first (so that /metrics and /api/ps below include them): a fresh prompt (a miss), then the
        # identical request again (a hit from the cache)
        prompt = "vastllm verify %d: reply with OK." % int(time.time() * 1000)
        out["messages"] = [message(proxy, key, prompt), message(proxy, key, prompt)]
    out["ollama"] = {
        "version": get_json(ollama + "/api/version"),
        "tags": get_json(ollama + "/api/tags"),
        "ps": get_json(ollama + "/api/ps"),
    }
    out["proxy"] = {
        "liveness": get_json(proxy + "/health/liveness"),
        "health": get_json(proxy + "/health"),
    }
    status, _, text, _ = http(proxy + "/metrics", headers=auth, timeout=10)
    out["proxy"]["metrics"] = {"status": status, "text": text if status == 200 else ""}
    monitor = settings.get("monitor") or []
    if monitor and os.path.exists(monitor[0]):
        out["monitor_report"] = run_json(monitor + ["report", "--json", "--window", "24h"])
    else:
        out["monitor_report"] = {"rc": -1, "json": None, "stderr": "vastllm-monitor not installed"}
    if settings["mode"] == "verify":
        return out
    out["monitor_check"] = (
        run_json(monitor + ["check"], timeout=180)
        if monitor and os.path.exists(monitor[0])
        else None
    )
    supervisorctl = settings.get("supervisorctl")
    if supervisorctl is None:  # not told: supervisord unless PID 1 is systemd
        try:
            with open("/proc/1/comm", encoding="utf-8") as handle:
                systemd = handle.read().strip() == "systemd"
        except OSError:
            systemd = False
        supervisorctl = [] if systemd or not shutil.which("supervisorctl") else ["supervisorctl"]
    if supervisorctl:
        out["services"] = run(supervisorctl + ["status"])
    else:
        out["services"] = run(["systemctl", "--no-pager", "status"] + settings["programs"])
    out["versions"] = {
        "ollama": run(["ollama", "--version"])["stdout"].strip() if shutil.which("ollama") else "",
        "redis": run(["redis-server", "--version"])["stdout"].strip()
        if shutil.which("redis-server")
        else "",
    }
    out["disk"] = [d for d in (disk(p) for p in ["/"] + settings.get("disk_paths", [])) if d]
    out["memory"] = meminfo()
    if shutil.which("nvidia-smi"):
        out["gpu"] = run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                "--format=csv,noheader,nounits",
            ]
        )
    else:
        out["gpu"] = None
    out["ports"] = listening()
    out["logs"] = {}
    for program in settings["programs"]:
        lines = tail(
            os.path.join(settings.get("log_dir", "/var/log/vastllm"), program + ".log"),
            int(settings.get("log_lines", 15)),
        )
        if lines is None and not supervisorctl:
            got = run(["journalctl", "-u", program, "-n", str(settings.get("log_lines", 15))])
            lines = got["stdout"].splitlines()
        out["logs"][program] = [line.replace(key, "***") if key else line for line in lines or []]
    return out


def main():
    settings = json.loads(sys.argv[1])
    print(json.dumps(probe(settings)))


if __name__ == "__main__":
    main()

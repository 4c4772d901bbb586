"""The commands: ``up``, ``status``, ``connect``, ``disconnect``, ``down``, ``diagnose``.

Each returns a ``Outcome`` (exit code, one-line summary, JSON data); ``__main__`` prints it.
Progress goes to stderr, the summary (or the JSON document) to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vastllm.cli import status as status_view
from vastllm.cli import tunnel
from vastllm.cli.config import CliError, Paths, Settings, write_private
from vastllm.cli.pricing import Wanted, choose_offer, search_query
from vastllm.cli.remote import (
    SshTarget,
    fetch_proxy_key,
    probe,
    proxy_window,
    served_context,
    target_for,
    wait_ssh,
)
from vastllm.cli.runner import RunResult, run_playbook
from vastllm.cli.vast import VastClient, api_url, by_label, resolve_key, with_prefix

INSTANCE_PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "instance.yml"
HEALTH_TIMEOUT = 60.0


@dataclass
class Outcome:
    code: int
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)  # lines printed after the summary (not JSON)


@dataclass
class Context:
    paths: Paths
    settings: Settings
    repo: Path
    verbose: bool = False
    json: bool = False
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _client: VastClient | None = None
    _secrets: set[str] = field(default_factory=set)

    def say(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    def client(self) -> VastClient:
        if self._client is None:
            key = resolve_key()
            self._secrets.add(key)
            self._client = VastClient(key, api_url(self.settings.api_url))
        return self._client

    def secrets(self) -> list[str]:
        return sorted(self._secrets)

    def key_file(self) -> Path:
        return Path(self.settings.ssh_key).expanduser()

    def run(
        self,
        playbook: Path,
        command: str,
        inventory: str,
        extravars: Mapping[str, Any] | None = None,
        extra_vars: list[str] | None = None,
    ) -> RunResult:
        run_dir = self.paths.new_run_dir(f"{command}-{playbook.stem}")
        self.say(f"-> {playbook.name} (log: {run_dir})")
        return run_playbook(
            playbook,
            repo=self.repo,
            run_dir=run_dir,
            inventory=inventory,
            extravars=extravars,
            extra_vars=extra_vars or [],
            secrets=self.secrets,
            verbose=self.verbose,
            out=self.err,
        )


# ------------------------------------------------------------------ shared steps


def _instance(ctx: Context, label: str) -> dict[str, Any] | None:
    found = by_label(ctx.client().instances(), label)
    if len(found) > 1:
        ids = ", ".join(str(i.get("id")) for i in found)
        raise CliError(f"{len(found)} instances carry the label {label!r} ({ids}): labels must be "
                       "unique; destroy the extra ones in the vast.ai console")  # fmt: skip
    return found[0] if found else None


def _target(ctx: Context, instance: Mapping[str, Any]) -> SshTarget:
    label = str(instance.get("label"))
    found = target_for(
        instance, ctx.settings.connect_with, ctx.key_file(), ctx.paths.known_hosts(label)
    )
    if found is None:
        raise CliError(f"{label} has no SSH address yet (status {instance.get('actual_status')})")
    return found


def write_inventory(ctx: Context, instance: Mapping[str, Any], target: SshTarget) -> Path:
    """The instance as an inventory file (group ``vastllm``, which site.yml targets), with the
    hostvars the ``vastai`` inventory plugin gives it."""
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_hosts import (
        instance_hostvars,
    )

    label = str(instance.get("label"))
    hostvars = instance_hostvars(instance, connect_with=ctx.settings.connect_with)
    hostvars.update(
        ansible_host=target.host,
        ansible_port=target.port,
        ansible_user=target.user,
        ansible_ssh_private_key_file=str(target.key_file),
    )
    doc = {"all": {"children": {"vastllm": {"hosts": {label: hostvars}},
                                "vastai": {"hosts": {label: {}}}}}}  # fmt: skip
    path = ctx.paths.inventory_file(label)
    write_private(
        path, "# Written by `vastllm`; rewritten on every run.\n" + json.dumps(doc, indent=1)
    )
    return path


def _extra_vars(ctx: Context, extra: list[str] | None) -> list[str]:
    """The ``-e`` values of the config and the command line (the runner passes them as files)."""
    return [*ctx.settings.extra_vars, *(extra or [])]


# What `vastllm up` always gives the stack, after (over) the user's extra vars: the proxy requires
# its key even on loopback (the default site.yml binds 127.0.0.1, where the role would otherwise
# write no key file and Claude Code's env file could get no token).
STACK_VARS: dict[str, Any] = {"proxy_require_api_key": True}
DEFAULT_KEY_FILE = "/etc/vastllm/proxy-api-key"


def proxy_key_file(result: RunResult, label: str) -> str:
    """Where the proxy role put the key on ``label``: its ``vastllm_proxy.key_file`` fact."""
    fact = (result.facts.get(label) or {}).get("vastllm_proxy")
    path = fact.get("key_file") if isinstance(fact, Mapping) else None
    return str(path) if path else DEFAULT_KEY_FILE


def _playbook(ctx: Context, name: str, issue: str) -> Path:
    path = ctx.repo / "playbooks" / name
    if not path.is_file():
        raise CliError(f"{path} is missing ({issue}); update the checkout")
    return path


def _check(result: RunResult, what: str) -> None:
    if result.ok:
        return
    detail = "; ".join(f"{h}: {t}: {m}" for h, t, m in result.progress.failures[-3:])
    detail = f": {detail}" if detail else ""
    raise CliError(
        f"{what} failed ({result.status}, rc {result.rc}){detail} — full log in {result.run_dir}"
    )


def _health(port: int, token: str | None, timeout: float) -> dict[str, Any]:
    import requests

    deadline = time.monotonic() + timeout
    last = ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while True:
        try:
            resp = requests.get(f"http://127.0.0.1:{port}/health", headers=headers, timeout=5)
            if resp.status_code == 200:
                data = resp.json()
                return data if isinstance(data, dict) else {"status": "?"}
            last = f"HTTP {resp.status_code}"
        except (requests.RequestException, ValueError) as err:
            last = type(err).__name__
        if time.monotonic() >= deadline:
            raise CliError(f"/health through the tunnel on 127.0.0.1:{port} failed: {last}")
        time.sleep(1)


def _metrics(port: int, token: str | None) -> dict[str, Any] | None:
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=5)
    except requests.RequestException:
        return None
    return status_view.parse_metrics(resp.text) if resp.status_code == 200 else None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` / ``export KEY=value`` lines of an env file (shell quoting undone)."""
    import shlex

    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        out[name.strip()] = parts[0] if parts else ""
    return out


def proxy_token(ctx: Context, label: str) -> str | None:
    token = read_env_file(ctx.paths.env_file(label)).get("ANTHROPIC_AUTH_TOKEN")
    if token:
        ctx._secrets.add(token)
    return token or None


def ensure_tunnel(
    ctx: Context, label: str, target: SshTarget, local_port: int, ollama_port: int
) -> tuple[str, dict[str, Any]]:
    """The kept tunnel for ``label`` (started, restarted or kept); returns (action, state)."""
    state_file = ctx.paths.tunnel_file(label)
    state = tunnel.read_state(state_file)
    alive = tunnel.keeper_alive(state)
    wanted = tunnel.wanted_spec(
        label, target.as_dict(), local_port, ctx.settings.remote_proxy_port, ollama_port
    )
    action = tunnel.connect_decision(state, alive, wanted)
    if action == "keep":
        return action, tunnel.wait_up(state_file, 30)
    if action == "restart" or (state is not None and not alive):
        tunnel.stop_keeper(state_file)
    for port in (local_port, ollama_port):
        if port and tunnel.port_open(port):
            owner = _tunnel_on_port(ctx, port)
            hint = f"the tunnel of {owner}" if owner else "another program"
            raise CliError(f"local port {port} is taken by {hint}: choose another with "
                           "--local-port / --ollama-port", 2)  # fmt: skip
    tunnel.start_keeper(state_file, ctx.paths.tunnel_log(label), wanted)
    return action, tunnel.wait_up(state_file, 30)


def _tunnel_on_port(ctx: Context, port: int) -> str | None:
    folder = ctx.paths.state_dir / "tunnels"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        state = tunnel.read_state(path)
        if (
            state
            and tunnel.keeper_alive(state)
            and port in (int(state.get("local_port") or 0), int(state.get("ollama_port") or 0))
        ):
            return str(state.get("label") or path.stem)
    return None


def write_env_file(
    ctx: Context,
    label: str,
    target: SshTarget,
    local_port: int,
    health: Mapping[str, Any],
    key_file: str = DEFAULT_KEY_FILE,
) -> Path:
    """Claude Code's environment for ``label`` (0600). The proxy key is fetched from the host only
    when the file does not hold it yet."""
    from vastllm.claude_env import claude_code_env, render_env_file, window_warning

    path = ctx.paths.env_file(label)
    token = proxy_token(ctx, label)
    if not token:
        token = fetch_proxy_key(target, key_file)
        ctx._secrets.add(token)
    model_info = health.get("model") if isinstance(health.get("model"), Mapping) else {}
    model = str((model_info or {}).get("name") or "")
    if not model:
        raise CliError("the proxy's /health names no model: is the model role done?")
    window = proxy_window(health)
    if window is None:
        _report, ps = probe(target)
        window = served_context(ps, model) or ctx.settings.context_window
    env = claude_code_env(f"http://127.0.0.1:{local_port}", token, model, int(window))
    warning = window_warning(int(window))
    if warning is not None:
        ctx.say(f"warning: {warning}")
    write_private(path, render_env_file(env))
    return path


def source_line(path: Path) -> str:
    import shlex

    return f"source {shlex.quote(str(path))} && claude"


# ------------------------------------------------------------------ up


def cmd_up(ctx: Context, args: Any) -> Outcome:
    started = time.monotonic()
    s = ctx.settings
    label = args.label or s.label
    cap = args.max_price if args.max_price is not None else s.max_price
    data: dict[str, Any] = {"label": label, "rented": False, "started": False}
    instance = _instance(ctx, label)
    if instance is None:
        if cap is None or cap <= 0:
            raise CliError(
                f"refusing to rent {label} without a price cap: pass --max-price DOLLARS_PER_HOUR "
                f"(the most the instance may cost in total, e.g. --max-price 0.60) or set "
                f"max_price in {ctx.paths.config_file}",
                2,
            )
        wanted = Wanted(
            max_price=float(cap),
            gpu_names=tuple(args.gpu or s.gpu),
            num_gpus=args.num_gpus or s.num_gpus,
            min_vram_gb=args.min_vram if args.min_vram is not None else s.min_vram,
            disk_gb=args.disk if args.disk is not None else s.disk,
            min_reliability=(
                args.min_reliability if args.min_reliability is not None else s.min_reliability
            ),
            verified_only=s.verified_only,
            region=args.region or s.region or None,
            down_gb_per_hour=s.bandwidth_down_gb_per_hour,
            up_gb_per_hour=s.bandwidth_up_gb_per_hour,
        )
        offers = ctx.client().search_offers(search_query(wanted))
        choice = choose_offer(offers, wanted)
        if choice.offer is None or choice.price is None:
            cheapest = (
                f"; the cheapest matching offer costs ${choice.cheapest_total:.4f}/h in total"
                if choice.cheapest_total is not None
                else "; no offer matches the GPU/VRAM/disk/reliability wanted"
            )
            raise CliError(f"no offer within ${cap:.4f}/h for {label} ({len(offers)} found"
                           f"{cheapest})")  # fmt: skip
        offer = choice.offer
        ctx.say(
            f"renting offer {offer.get('id')}: {offer.get('num_gpus')}x {offer.get('gpu_name')} "
            f"in {offer.get('geolocation') or '?'}, {choice.price.describe()} <= cap ${cap:.4f}/h"
        )
        data["offer"] = {"id": offer.get("id"), "gpu": offer.get("gpu_name"),
                         "num_gpus": offer.get("num_gpus"),
                         "total_dph": round(choice.price.total, 4),
                         "gpu_dph": round(choice.price.gpu, 4),
                         "storage_dph": round(choice.price.storage, 4),
                         "bandwidth_dph": round(choice.price.bandwidth, 4)}  # fmt: skip
        pub = Path(str(ctx.key_file()) + ".pub")
        extravars: dict[str, Any] = {
            "vastllm_label": label,
            "vastllm_state": "running",
            "vastllm_max_dph": float(cap),
            "vastllm_offer_filters": {"id": {"eq": int(offer["id"])}},
            "vastllm_gpu_names": list(wanted.gpu_names),
            "vastllm_num_gpus": wanted.num_gpus,
            "vastllm_min_reliability": wanted.min_reliability,
            "vastllm_verified_only": wanted.verified_only,
            "vastllm_image": args.image or s.image,
            "vastllm_disk": wanted.disk_gb,
            "vastllm_connect_with": s.connect_with,
            "vastllm_wait_timeout": s.wait_timeout,
            "vastllm_poll_interval": 2,
        }
        if wanted.min_vram_gb is not None:
            extravars["vastllm_min_gpu_ram"] = wanted.min_vram_gb
        if wanted.region:
            extravars["vastllm_region"] = wanted.region
        if pub.is_file():
            extravars["vastllm_ssh_public_key"] = pub.read_text().strip()
        _check(ctx.run(INSTANCE_PLAYBOOK, "up", "localhost,", extravars), f"renting {label}")
        data["rented"] = True
    elif str(instance.get("actual_status")) != "running":
        ctx.say(
            f"starting {label} (instance {instance.get('id')}, {instance.get('actual_status')})"
        )
        extravars = {"vastllm_label": label, "vastllm_state": "running",
                     "vastllm_wait_timeout": s.wait_timeout, "vastllm_poll_interval": 2,
                     "vastllm_connect_with": s.connect_with}  # fmt: skip
        _check(ctx.run(INSTANCE_PLAYBOOK, "up", "localhost,", extravars), f"starting {label}")
        data["started"] = True
    else:
        ctx.say(f"{label} runs already (instance {instance.get('id')}, "
                f"${float(instance.get('dph_total') or 0):.4f}/h): nothing rented")  # fmt: skip
    instance = _instance(ctx, label)
    if instance is None:
        raise CliError(f"{label} vanished from the account right after it was rented/started")
    data["id"] = instance.get("id")
    target = _target(ctx, instance)
    ctx.say(f"waiting for SSH on {target.host}:{target.port} ({target.mode})")
    wait_ssh(target, float(s.wait_timeout))
    inventory = write_inventory(ctx, instance, target)
    proxy_token(ctx, label)  # known key -> redacted from the logs
    extra = _extra_vars(ctx, args.extra_vars)
    stack = ctx.repo / (args.playbook or s.playbook)
    if not stack.is_file():
        raise CliError(f"the stack playbook {stack} does not exist", 2)
    site = ctx.run(stack, "up", str(inventory), STACK_VARS, extra)
    _check(site, stack.name)
    data["site_changed"] = site.progress.changed
    verify_pb = _playbook(ctx, "verify.yml", "issue 10")
    verify = ctx.run(verify_pb, "up", str(inventory), STACK_VARS, extra)
    _check(verify, "verify.yml")
    local_port = args.local_port or s.local_port
    ollama_port = args.ollama_port if args.ollama_port is not None else s.ollama_port
    action, _state = ensure_tunnel(ctx, label, target, local_port, ollama_port)
    health = _health(local_port, proxy_token(ctx, label), HEALTH_TIMEOUT)
    env_path = write_env_file(ctx, label, target, local_port, health, proxy_key_file(site, label))
    seconds = time.monotonic() - started
    data.update(site_changed=site.progress.changed, tunnel=action, local_port=local_port,
                env_file=str(env_path), seconds=round(seconds, 1),
                proxy=health.get("status"))  # fmt: skip
    what = "rented" if data["rented"] else "started" if data["started"] else "already up"
    summary = (
        f"{label} {what}: {stack.name} changed={site.progress.changed}, verify passed, proxy "
        f"{health.get('status')} on 127.0.0.1:{local_port} ({seconds:.0f} s)"
    )
    return Outcome(0, summary, data, [source_line(env_path)])


# ------------------------------------------------------------------ status


def cmd_status(ctx: Context, args: Any) -> Outcome:
    prefix = args.prefix or ctx.settings.label_prefix
    now = time.time()
    rows = []
    for instance in with_prefix(ctx.client().instances(), prefix):
        label = str(instance.get("label") or instance.get("id"))
        state_file = ctx.paths.tunnel_file(label)
        tstate = tunnel.read_state(state_file)
        alive = tunnel.keeper_alive(tstate)
        port = int((tstate or {}).get("local_port") or 0)
        tun = tunnel.tunnel_state(tstate, alive, bool(port) and tunnel.port_open(port))
        health = metrics = report = None
        window = None
        token = proxy_token(ctx, label)
        if tun == "up":
            try:
                health = _health(port, token, 3)
            except CliError:
                health = {"status": "no answer"}
            metrics = _metrics(port, token)
        if str(instance.get("actual_status")) == "running" and not args.no_ssh:
            try:
                target = _target(ctx, instance)
            except CliError:
                target = None
            if target is not None:
                report, ps = probe(target)
                model = ((health or {}).get("model") or {}).get("name") if health else None
                window = served_context(ps, model)
        window = proxy_window(health) or window
        rows.append(status_view.status_row(instance, now, health=health, metrics=metrics,
                                           monitor=report, context_window=window, tunnel=tun,
                                           local_port=port or None))  # fmt: skip
    spending = status_view.spending_line(rows, prefix)
    warns = status_view.warnings(rows, ctx.settings.idle_warning_minutes)
    data = {"prefix": prefix, "instances": rows, "spending": spending, "warnings": warns}
    tail = [status_view.render_table(rows)] if rows else []
    tail += [spending, *warns]
    return Outcome(0, f"{len(rows)} instance(s) with prefix {prefix!r}", data, tail)


# ------------------------------------------------------------------ connect / disconnect


def cmd_connect(ctx: Context, args: Any) -> Outcome:
    label = args.label or ctx.settings.label
    instance = _instance(ctx, label)
    if instance is None:
        raise CliError(f"no instance labelled {label}: run vastllm up first")
    if str(instance.get("actual_status")) != "running":
        raise CliError(f"{label} is {instance.get('actual_status')}: run vastllm up to start it")
    target = _target(ctx, instance)
    local_port = args.local_port or ctx.settings.local_port
    ollama_port = args.ollama_port if args.ollama_port is not None else ctx.settings.ollama_port
    action, state = ensure_tunnel(ctx, label, target, local_port, ollama_port)
    health = _health(local_port, proxy_token(ctx, label), HEALTH_TIMEOUT)
    env_path = ctx.paths.env_file(label)
    tail = [source_line(env_path)] if env_path.exists() else [
        f"(no {env_path} yet: vastllm up --label {label} writes it)"]  # fmt: skip
    word = {"keep": "kept (already up)", "restart": "restarted", "start": "opened"}[action]
    summary = (f"tunnel {word}: 127.0.0.1:{local_port} -> {label} ({target.mode} "
               f"{target.host}:{target.port}), proxy {health.get('status')}")  # fmt: skip
    data = {"label": label, "action": action, "local_port": local_port,
            "ollama_port": ollama_port or None, "pid": state.get("pid"),
            "proxy": health.get("status"), "env_file": str(env_path)}  # fmt: skip
    return Outcome(0, summary, data, tail)


def cmd_disconnect(ctx: Context, args: Any) -> Outcome:
    label = args.label or ctx.settings.label
    was = tunnel.stop_keeper(ctx.paths.tunnel_file(label))
    summary = f"tunnel of {label} closed" if was else f"no tunnel of {label} was open"
    return Outcome(0, summary, {"label": label, "closed": was})


# ------------------------------------------------------------------ down


def _confirm(label: str, instance: Mapping[str, Any]) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(
        f"Destroy {label} (instance {instance.get('id')})? Its disk and everything on it are "
        f"deleted; this cannot be undone. Type the label to confirm: "
    )
    return answer.strip() == label


def cmd_down(ctx: Context, args: Any) -> Outcome:
    label = args.label or ctx.settings.label
    closed = tunnel.stop_keeper(ctx.paths.tunnel_file(label))
    instance = _instance(ctx, label)
    data: dict[str, Any] = {"label": label, "tunnel_closed": closed}
    if instance is None:
        return Outcome(0, f"no instance labelled {label}: nothing to stop", data)
    data["id"] = instance.get("id")
    if args.destroy:
        if not args.yes and not _confirm(label, instance):
            raise CliError(f"not destroying {label}: confirm by typing the label, or pass --yes", 2)
        extravars = {"vastllm_label": label, "vastllm_state": "absent"}
        _check(ctx.run(INSTANCE_PLAYBOOK, "down", "localhost,", extravars), f"destroying {label}")
        for path in (ctx.paths.env_file(label), ctx.paths.inventory_file(label),
                     ctx.paths.known_hosts(label)):  # fmt: skip
            path.unlink(missing_ok=True)
        data["destroyed"] = True
        return Outcome(0, f"{label} destroyed (instance {instance.get('id')}); billing ended", data)
    if (
        str(instance.get("actual_status")) in ("stopped", "exited")
        and str(instance.get("intended_status")) == "stopped"
    ):
        return Outcome(0, f"{label} is stopped already (disk kept)", {**data, "stopped": True})
    extravars = {"vastllm_label": label, "vastllm_state": "stopped"}
    _check(ctx.run(INSTANCE_PLAYBOOK, "down", "localhost,", extravars), f"stopping {label}")
    data["stopped"] = True
    return Outcome(
        0,
        f"{label} stopped (instance {instance.get('id')}): GPU billing ended, the disk is kept "
        f"(storage still billed); vastllm up starts it, vastllm down --destroy deletes it",
        data,
    )


# ------------------------------------------------------------------ diagnose


def _latest_report(repo: Path, label: str, kind: str, since: float) -> Path | None:
    folder = repo / "reports" / label
    found = [p for p in folder.glob(f"{kind}-*.json") if p.stat().st_mtime >= since - 1]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _finding_text(item: Any) -> str:
    if isinstance(item, Mapping):
        for key in ("message", "summary", "finding", "title", "msg"):
            if item.get(key):
                level = item.get("severity") or item.get("level")
                return f"[{level}] {item[key]}" if level else str(item[key])
        return json.dumps(item, sort_keys=True)
    return str(item)


def cmd_diagnose(ctx: Context, args: Any) -> Outcome:
    label = args.label or ctx.settings.label
    instance = _instance(ctx, label)
    if instance is None:
        raise CliError(f"no instance labelled {label}")
    target = _target(ctx, instance)
    inventory = write_inventory(ctx, instance, target)
    proxy_token(ctx, label)
    began = time.time()
    playbook = _playbook(ctx, "diagnose.yml", "issue 10")
    result = ctx.run(
        playbook, "diagnose", str(inventory), STACK_VARS, _extra_vars(ctx, args.extra_vars)
    )
    report = _latest_report(ctx.repo, label, "diagnose", began)
    findings: list[Any] = []
    if report is not None:
        try:
            doc = json.loads(report.read_text(encoding="utf-8"))
            findings = list(doc.get("findings") or []) if isinstance(doc, dict) else []
        except (OSError, ValueError):
            pass
    lines = [f"  - {_finding_text(f)}" for f in findings] or ["  (no findings)"]
    data = {"label": label, "report": str(report) if report else None,
            "findings": findings, "run_dir": str(result.run_dir)}  # fmt: skip
    if report is not None:
        lines.append(f"report: {report} (and .md)")
    code = 0 if result.ok else 1
    summary = f"diagnose {label}: {len(findings)} finding(s)" + (
        "" if result.ok else " (run failed)"
    )
    return Outcome(code, summary, data, lines)


COMMANDS = {
    "up": cmd_up,
    "status": cmd_status,
    "connect": cmd_connect,
    "disconnect": cmd_disconnect,
    "down": cmd_down,
    "diagnose": cmd_diagnose,
}


def environ_home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())

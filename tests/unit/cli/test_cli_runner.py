"""run_playbook with a stand-in for ansible_runner.run: what stays in the runs folder, what goes on
the command line, and which facts come back (review of issue 11)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import yaml

from vastllm.cli import commands
from vastllm.cli.runner import run_playbook

REPO = Path(__file__).resolve().parents[3]
VAST_KEY = "lab-key"
PROXY_KEY = "vastllm-proxy-" + "k3y" * 6
TOKEN = "sk-ant-" + "t0ken" * 5


class FakeRunner:
    """Writes what ansible-runner writes (the env dump, raw stdout, env files unless suppressed),
    feeds events, then fails the way it is told."""

    def __init__(self, raise_with: BaseException | None = None, events: list[dict] | None = None):
        self.raise_with = raise_with
        self.events = events or []
        self.calls: list[dict] = []
        self.var_files: dict[str, dict] = {}

    def __call__(self, **kw):
        self.calls.append(kw)
        run_dir = Path(kw["private_data_dir"])
        art = run_dir / "artifacts" / kw["ident"]
        (art / "job_events").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(kw.get("envvars") or {})}
        for name in ("envvars", "extravars"):
            if kw.get(name) and not kw.get("suppress_env_files"):
                (run_dir / "env").mkdir(exist_ok=True)
                (run_dir / "env" / name).write_text(json.dumps(kw[name]))
        if kw.get("status_handler"):
            kw["status_handler"]({"status": "starting"}, runner_config=None)
        (art / "command").write_text(json.dumps({"command": kw.get("cmdline"), "env": env}))
        args = (kw.get("cmdline") or "").split()
        for arg in args:
            if arg.startswith("@") and Path(arg[1:]).is_file():
                self.var_files[arg[1:]] = yaml.safe_load(Path(arg[1:]).read_text())
        if kw.get("status_handler"):
            kw["status_handler"]({"status": "running"}, runner_config=None)
        raw = open(art / "stdout", "w") if not kw.get("suppress_output_file") else None  # noqa: SIM115
        for number, event in enumerate(self.events, 1):
            text = event.get("stdout", "")
            if raw:
                raw.write(text + "\n")
                raw.flush()
            kw["event_handler"](event)
            (art / "job_events" / f"{number}.json").write_text(json.dumps(event))
        if self.raise_with is not None:
            raise self.raise_with
        if raw:
            raw.close()
        return types.SimpleNamespace(rc=0, status="successful")


def _leaky_events():
    return [
        {
            "event": "runner_on_ok",
            "uuid": "1",
            "stdout": f"ok: key {PROXY_KEY} vast {VAST_KEY} token {TOKEN}",
            "event_data": {"host": "vastllm-1", "task": "leak", "res": {"msg": PROXY_KEY}},
        }
    ]


@pytest.fixture
def env_with_secrets(monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", TOKEN)


def _files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("crash", [KeyboardInterrupt(), RuntimeError("runner crashed")])
def test_interrupted_run_leaves_no_secret_in_the_runs_folder(
    tmp_path, monkeypatch, env_with_secrets, crash
):
    import ansible_runner

    fake = FakeRunner(raise_with=crash, events=_leaky_events())
    monkeypatch.setattr(ansible_runner, "run", fake)
    run_dir = tmp_path / "runs" / "x-up-site"
    run_dir.mkdir(parents=True)
    with pytest.raises(type(crash)):
        run_playbook(
            REPO / "site.yml",
            repo=REPO,
            run_dir=run_dir,
            inventory="localhost,",
            extravars={"proxy_require_api_key": True},
            extra_vars=[f"proxy_api_key={PROXY_KEY}", "model_name=qwen"],
            secrets=lambda: [VAST_KEY],
            out=io.StringIO(),
        )
    files = _files(tmp_path / "runs")
    assert files  # the events are kept
    for path in files:
        text = path.read_text(errors="replace")
        for secret in (VAST_KEY, PROXY_KEY, TOKEN):
            assert secret not in text, (path, secret)
    assert not list(run_dir.glob("artifacts/*/command"))
    assert not list((run_dir / "env").glob("*")) if (run_dir / "env").exists() else True


def test_extra_vars_go_in_private_files_not_on_the_command_line(tmp_path, monkeypatch):
    import ansible_runner

    fake = FakeRunner(events=[])
    monkeypatch.setattr(ansible_runner, "run", fake)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    modes: list[int] = []
    real = fake.__call__

    def spy(**kw):
        for arg in (kw.get("cmdline") or "").split():
            if arg.startswith("@") and Path(arg[1:]).name.startswith("vars-"):
                modes.append(stat.S_IMODE(Path(arg[1:]).stat().st_mode))
        return real(**kw)

    monkeypatch.setattr(ansible_runner, "run", spy)
    user_file = tmp_path / "mine.yml"
    user_file.write_text(yaml.safe_dump({"a": 1}))
    result = run_playbook(
        REPO / "site.yml",
        repo=REPO,
        run_dir=run_dir,
        inventory="localhost,",
        extravars={"proxy_require_api_key": True},
        extra_vars=[
            f"proxy_api_key={PROXY_KEY} n=2",
            f"@{user_file}",
            '{"admin_password": "hunter2hunter2"}',
        ],
        out=io.StringIO(),
    )
    assert result.ok
    cmdline = fake.calls[0]["cmdline"]
    assert PROXY_KEY not in cmdline
    assert "hunter2" not in cmdline
    assert not fake.calls[0].get("extravars")  # nothing for ansible-runner to put on the line
    assert f"-e @{user_file}" in cmdline
    assert modes
    assert all(m == 0o600 for m in modes)
    loaded = list(fake.var_files.values())
    assert loaded[0] == {"proxy_api_key": PROXY_KEY, "n": "2"}
    assert loaded[-1] == {"proxy_require_api_key": True}  # the CLI's own vars come last (win)
    assert cmdline.index(f"@{user_file}") < cmdline.rindex("vars-")
    assert not [p for p in _files(run_dir) if p.name.startswith("vars-")]  # deleted after the run


def test_secret_looking_extra_vars_are_redacted_from_the_events(tmp_path, monkeypatch):
    import ansible_runner

    events = [{"event": "verbose", "uuid": "1", "stdout": "password is hunter2hunter2"}]
    monkeypatch.setattr(ansible_runner, "run", FakeRunner(events=events))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_playbook(
        REPO / "site.yml",
        repo=REPO,
        run_dir=run_dir,
        inventory="localhost,",
        extra_vars=["db_password=hunter2hunter2"],
        out=io.StringIO(),
    )
    for path in _files(run_dir):
        assert "hunter2hunter2" not in path.read_text(), path


def test_up_requires_the_proxy_key_and_reads_its_path_from_the_role(tmp_path, monkeypatch):
    """The default site.yml binds the proxy to 127.0.0.1, where the role writes no key file unless
    a key is required: `up` requires it, and asks the role (vastllm_proxy.key_file) where it is."""
    specs = yaml.safe_load((REPO / "roles/proxy/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(commands.STACK_VARS) <= set(options)
    assert commands.STACK_VARS["proxy_require_api_key"] is True
    site = yaml.safe_load((REPO / "site.yml").read_text())
    assert "proxy_host" not in json.dumps(site)  # no lab override: the role default (loopback)

    import ansible_runner

    events = [
        {
            "event": "runner_on_ok",
            "uuid": "1",
            "stdout": "ok: [vastllm-1]",
            "event_data": {
                "host": "vastllm-1",
                "task": "Publish",
                "res": {
                    "ansible_facts": {
                        "vastllm_proxy": {
                            "url": "http://127.0.0.1:8000",
                            "key_file": "/srv/k/proxy-key",
                        }
                    }
                },
            },
        }
    ]
    monkeypatch.setattr(ansible_runner, "run", FakeRunner(events=events))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_playbook(
        REPO / "site.yml",
        repo=REPO,
        run_dir=run_dir,
        inventory="localhost,",
        extravars=commands.STACK_VARS,
        out=io.StringIO(),
    )
    assert commands.proxy_key_file(result, "vastllm-1") == "/srv/k/proxy-key"
    assert commands.proxy_key_file(result, "other") == "/etc/vastllm/proxy-api-key"


def test_fetch_proxy_key_reads_the_given_path(monkeypatch):
    from vastllm.cli import remote

    seen: list[str] = []

    def fake_ssh(target, command, timeout=30.0):
        seen.append(command)
        return types.SimpleNamespace(returncode=0, stdout="k3y-value\n", stderr="")

    monkeypatch.setattr(remote, "ssh", fake_ssh)
    assert remote.fetch_proxy_key(None, "/srv/k/proxy key") == "k3y-value"  # type: ignore[arg-type]
    assert seen == ["cat '/srv/k/proxy key'"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


def test_requests_count_only_answered_traffic():
    from vastllm.cli.status import parse_metrics

    text = "\n".join(
        [
            'vastllm_requests_total{route="messages",status="200"} 3',
            'vastllm_requests_total{route="messages",status="401"} 50',
            'vastllm_requests_total{route="messages",status="500"} 2',
        ]
    )
    assert parse_metrics(text)["requests"] == 3

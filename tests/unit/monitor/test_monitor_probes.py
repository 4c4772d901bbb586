"""Parsers of the host figures and of PID 1's environment."""

from __future__ import annotations

from vastllm.monitor.probes import (
    container_start_token,
    disk,
    parse_environ,
    parse_meminfo,
    parse_nvidia_smi,
    read_credential,
)

MEMINFO = """MemTotal:       16000000 kB
MemFree:         2000000 kB
MemAvailable:    4000000 kB
Buffers:          100000 kB
"""


def test_parse_meminfo():
    assert parse_meminfo(MEMINFO) == {
        "total_bytes": 16000000 * 1024,
        "available_bytes": 4000000 * 1024,
        "used_pct": 75.0,
    }
    assert parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n")["used_pct"] == 50.0
    assert parse_meminfo("garbage") is None


def test_parse_nvidia_smi():
    text = "NVIDIA GeForce RTX 4090, 12288, 24564, 37\nNVIDIA A100-SXM4-80GB, [N/A], 81920, 0\n"
    assert parse_nvidia_smi(text) == [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 4090",
            "memory_used_mib": 12288.0,
            "memory_total_mib": 24564.0,
            "utilization_pct": 37.0,
        },
        {
            "index": 1,
            "name": "NVIDIA A100-SXM4-80GB",
            "memory_used_mib": None,
            "memory_total_mib": 81920.0,
            "utilization_pct": 0.0,
        },
    ]
    assert parse_nvidia_smi("") == []


def test_parse_environ():
    data = b"PATH=/usr/bin\0CONTAINER_ID=123\0EMPTY=\0A=b=c\0junk\0"
    assert parse_environ(data) == {
        "PATH": "/usr/bin",
        "CONTAINER_ID": "123",
        "EMPTY": "",
        "A": "b=c",
    }


def test_read_credential(tmp_path):
    environ = tmp_path / "environ"
    environ.write_bytes(b"CONTAINER_ID=4242\0CONTAINER_API_KEY=scoped-secret\0VAST_API_KEY=user\0")
    credential, why = read_credential(str(environ))
    assert why == ""
    assert credential.instance_id == "4242"
    assert credential.api_key == "scoped-secret"
    assert "scoped-secret" not in repr(credential)


def test_read_credential_missing(tmp_path):
    environ = tmp_path / "environ"
    environ.write_bytes(b"VAST_API_KEY=user-key\0CONTAINER_ID=4242\0")
    credential, why = read_credential(str(environ))
    assert credential is None
    assert "CONTAINER_ID/CONTAINER_API_KEY are not set" in why
    assert "user-key" not in why
    credential, why = read_credential(str(tmp_path / "nope"))
    assert credential is None
    assert "cannot read" in why
    environ.write_bytes(b"CONTAINER_ID=abc\0CONTAINER_API_KEY=k\0")
    assert read_credential(str(environ))[0] is None


def test_container_start_token(tmp_path):
    (tmp_path / "stat").write_text(
        "1 (my (odd) init) S 0 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n"
    )
    assert container_start_token(str(tmp_path / "environ")) == "987654"
    assert container_start_token(str(tmp_path / "none" / "environ")) == ""


def test_disk_of_a_path_not_created_yet(tmp_path):
    figures = disk(str(tmp_path / "not" / "yet"))
    assert figures["path"] == str(tmp_path / "not" / "yet")
    assert figures["total_bytes"] > 0
    assert 0 <= figures["used_pct"] <= 100

"""Realistic lab data for the vast.ai emulator: instance objects and a market of offers.

Deterministic (seeded) so tests and benchmarks see the same rows on every run. Every address
handed out is loopback (127.0.0.1) or an ``.invalid`` name, so a client that connects to what
it reads never leaves the machine.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

LAB_IP = "127.0.0.1"

GPU_CATALOG: tuple[tuple[str, int, float], ...] = (
    # name, gpu_ram (MB, as the API reports), base $/h per GPU
    ("RTX 3090", 24576, 0.18),
    ("RTX 4090", 24564, 0.35),
    ("RTX A6000", 49140, 0.45),
    ("A100 SXM4", 81920, 1.10),
    ("H100 SXM", 81559, 2.20),
    ("L40S", 46068, 0.70),
)
HOURS_PER_MONTH = 730.0  # storage_cost is $/GB/month; storage_total_cost is $/h

REGIONS = (
    "Texas, US",
    "Quebec, CA",
    "Oregon, US",
    "Norway, NO",
    "Bavaria, DE",
    "Taiwan, TW",
)


def make_instance(
    instance_id: int,
    *,
    label: str | None = None,
    gpu_name: str = "RTX 4090",
    gpu_ram: int = 24564,
    num_gpus: int = 1,
    status: str = "running",
    dph_total: float = 0.35,
    geolocation: str = "Texas, US",
    machine_id: int | None = None,
    image: str = "vastai/base-image:cuda-12.4-ubuntu22.04",
    ssh_port: int | None = None,
    direct_port: int | None = None,
    disk_space: float = 64.0,
    extra_ports: Mapping[str, str] | None = None,
    image_runtype: str = "ssh_direc ssh_proxy",
    start_date: float = 1_732_000_000.0,
    storage_cost: float = 0.15,
    inet_up_cost: float = 0.002,
    inet_down_cost: float = 0.002,
) -> dict[str, Any]:
    """A realistic instance object, shaped like the API returns it.

    ``ports`` is only present (non-empty) once the instance is running; ``HostPort`` is a
    string, as in the real API. Money: ``dph_total`` is the all-in $/h while it runs,
    ``storage_cost`` $/GB/month of disk (billed while stopped too), ``storage_total_cost`` that
    disk's $/h, ``inet_up_cost``/``inet_down_cost`` $/GB of traffic; ``start_date`` is the
    rental's start (Unix seconds), from which spend so far is computed.
    """
    proxy_port = ssh_port if ssh_port is not None else 20000 + (instance_id % 40000)
    running = status == "running"
    ports: dict[str, list[dict[str, str]]] = {}
    if running:
        host_port = direct_port if direct_port is not None else 40000 + (instance_id % 20000)
        ports["22/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": str(host_port)}]
        for container, hp in (extra_ports or {}).items():
            ports[container] = [{"HostIp": "0.0.0.0", "HostPort": str(hp)}]
    intended = "stopped" if status in ("exited", "stopped") else "running"
    return {
        "id": instance_id,
        "label": label,
        "actual_status": status,
        "intended_status": intended,
        "cur_state": "stopped" if intended == "stopped" else "running",
        "next_state": "stopped" if intended == "stopped" else "running",
        "status_msg": "success, running" if running else "",
        "gpu_name": gpu_name,
        "num_gpus": num_gpus,
        "gpu_ram": gpu_ram,
        "gpu_totalram": gpu_ram * num_gpus,
        "gpu_util": 0.0,
        "cpu_name": "AMD EPYC 7543 32-Core Processor",
        "cpu_cores": 64,
        "cpu_cores_effective": 16.0,
        "cpu_ram": 128905,
        "disk_space": disk_space,
        "disk_util": 1.2,
        "public_ipaddr": LAB_IP,
        "ssh_host": f"ssh{instance_id % 9 + 1}.lab.invalid",
        "ssh_port": proxy_port,
        "ssh_idx": str(instance_id % 9 + 1),
        "ports": ports,
        "direct_port_start": 40000,
        "direct_port_end": 40100,
        "machine_id": machine_id if machine_id is not None else 10000 + instance_id,
        "host_id": 5000 + instance_id % 100,
        "dph_total": dph_total,
        "dph_base": round(dph_total * 0.9, 4),
        "storage_cost": storage_cost,
        "storage_total_cost": round(disk_space * storage_cost / HOURS_PER_MONTH, 6),
        "inet_up_cost": inet_up_cost,
        "inet_down_cost": inet_down_cost,
        "geolocation": geolocation,
        "image_uuid": image,
        "image_runtype": image_runtype,
        "image_args": [],
        "extra_env": [],
        "onstart": "",
        "reliability2": 0.995,
        "verification": "verified",
        "inet_up": 850.0,
        "inet_down": 920.0,
        "start_date": start_date,
        "end_date": None,
        "duration": None,
        "template_id": None,
        "jupyter_token": None,
    }


def generate_instances(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` varied running instances (a few stopped/loading ones among them)."""
    rng = random.Random(seed)  # noqa: S311 - deterministic lab data, not crypto
    rows = []
    for n in range(count):
        instance_id = 9_000_000 + n
        gpu, ram, price = GPU_CATALOG[n % len(GPU_CATALOG)]
        num = rng.choice((1, 1, 2, 4))
        status = "running"
        if n % 50 == 7:
            status = "exited"
        elif n % 50 == 9:
            status = "loading"
        label = f"lab-{n:04d}" if n % 10 else None
        rows.append(
            make_instance(
                instance_id,
                label=label,
                gpu_name=gpu,
                gpu_ram=ram,
                num_gpus=num,
                status=status,
                dph_total=round(price * num * rng.uniform(0.9, 1.3), 4),
                geolocation=REGIONS[n % len(REGIONS)],
            )
        )
    return rows


def generate_offers(count: int = 120, seed: int = 11) -> list[dict[str, Any]]:
    """A market of offers covering every GPU in the catalog, several regions and prices."""
    rng = random.Random(seed)  # noqa: S311 - deterministic lab data, not crypto
    offers = []
    for n in range(count):
        gpu, ram, price = GPU_CATALOG[n % len(GPU_CATALOG)]
        num = rng.choice((1, 1, 1, 2, 4, 8))
        dph = round(price * num * rng.uniform(0.85, 1.6), 4)
        reliability = round(rng.uniform(0.93, 0.9995), 4)
        verified = rng.random() > 0.2
        offers.append(
            {
                "id": 30_000_000 + n,
                "ask_contract_id": 30_000_000 + n,
                "machine_id": 20_000 + n,
                "host_id": 6000 + n,
                "gpu_name": gpu,
                "num_gpus": num,
                "gpu_ram": ram,
                "gpu_total_ram": ram * num,
                "cpu_ram": 64000 * num,
                "cpu_cores_effective": 8.0 * num,
                "disk_space": float(rng.choice((100, 250, 500, 1000))),
                "dph_total": dph,
                "dph_base": round(dph * 0.9, 4),
                # not drawn from rng: adding them kept every other field of the market unchanged
                "storage_cost": round(0.10 + (n % 5) * 0.025, 3),
                "inet_up_cost": round(0.001 + (n % 3) * 0.001, 3),
                "inet_down_cost": round(0.001 + (n % 4) * 0.001, 3),
                "reliability2": reliability,
                "reliability": reliability,
                "verification": "verified" if verified else "unverified",
                "verified": verified,
                "geolocation": REGIONS[rng.randrange(len(REGIONS))],
                "inet_down": float(rng.choice((200, 500, 1000))),
                "inet_up": float(rng.choice((100, 500, 900))),
                "rentable": True,
                "rented": False,
                "external": False,
                "direct_port_count": 100,
                "cuda_max_good": 12.4,
                "score": round(rng.uniform(50, 500), 2),
            }
        )
    return offers

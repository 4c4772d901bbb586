# Copyright: vastllm contributors
# Apache-2.0
"""Pure offer selection for the `vastai_instance` module (no I/O).

``build_offer_query`` turns renting criteria into a vast.ai search query, ``offer_problems``
re-checks an offer client-side (the server may ignore a filter), and ``select_offer`` picks
the cheapest offer that meets every criterion (ties: higher reliability, then lower id).
``build_create_payload`` builds the body of ``PUT /api/v0/asks/<offer id>/``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# vast.ai reports GPU RAM in MB and queries it in MB; users think in GB (CLI multiplies by 1000).
MB_PER_GB = 1000.0
SEARCH_LIMIT = 64


@dataclass(frozen=True)
class OfferCriteria:
    """What to rent. ``max_dph`` ($/hour, whole instance) is the mandatory cost guard."""

    max_dph: float
    gpu_names: Sequence[str] = ()
    num_gpus: int = 1
    min_gpu_ram_gb: float | None = None
    min_disk_gb: float | None = None
    min_reliability: float | None = None
    verified_only: bool = True
    region: str | None = None
    extra_filters: Mapping[str, Any] = field(default_factory=dict)


class OfferError(ValueError):
    """Invalid criteria."""


def validate_criteria(criteria: OfferCriteria) -> None:
    if criteria.max_dph is None or criteria.max_dph <= 0:
        raise OfferError("max_dph (maximum price per hour, in $) must be greater than 0")
    if criteria.num_gpus < 1:
        raise OfferError("num_gpus must be at least 1")
    if criteria.min_reliability is not None and not 0 <= criteria.min_reliability <= 1:
        raise OfferError("min_reliability must be between 0 and 1 (e.g. 0.98)")
    bounds = (("min_gpu_ram", criteria.min_gpu_ram_gb), ("min_disk", criteria.min_disk_gb))
    for name, value in bounds:
        if value is not None and value < 0:
            raise OfferError(f"{name} must not be negative")


def api_gpu_name(name: str) -> str:
    """``RTX_4090`` (CLI spelling) -> ``RTX 4090`` (API spelling)."""
    return name.replace("_", " ").strip()


def build_offer_query(criteria: OfferCriteria, disk_gb: float) -> dict[str, Any]:
    """The search body for ``POST /api/v0/bundles/``."""
    validate_criteria(criteria)
    q: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "external": {"eq": False},
        "num_gpus": {"eq": int(criteria.num_gpus)},
        "dph_total": {"lte": float(criteria.max_dph)},
    }
    if criteria.verified_only:
        q["verified"] = {"eq": True}
    names = [api_gpu_name(n) for n in criteria.gpu_names if n and not _is_glob(n)]
    if names and len(names) == len([n for n in criteria.gpu_names if n]):
        q["gpu_name"] = {"eq": names[0]} if len(names) == 1 else {"in": names}
    if criteria.min_gpu_ram_gb is not None:
        q["gpu_ram"] = {"gte": float(criteria.min_gpu_ram_gb) * MB_PER_GB}
    if criteria.min_disk_gb is not None:
        q["disk_space"] = {"gte": float(criteria.min_disk_gb)}
    if criteria.min_reliability is not None:
        q["reliability"] = {"gte": float(criteria.min_reliability)}
    for name, cond in criteria.extra_filters.items():
        q[name] = dict(cond)
    q["order"] = [["dph_total", "asc"]]
    q["type"] = "on-demand"
    q["limit"] = SEARCH_LIMIT
    q["allocated_storage"] = float(disk_gb)
    return q


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _region_matches(geolocation: str, region: str) -> bool:
    geo = geolocation.strip().lower()
    wanted = region.strip().lower()
    if not wanted:
        return True
    if _is_glob(wanted):
        return fnmatch.fnmatchcase(geo, wanted)
    country = geo.rsplit(",", 1)[-1].strip()
    return country == wanted or geo == wanted


def offer_reliability(offer: Mapping[str, Any]) -> float:
    value = offer.get("reliability2", offer.get("reliability"))
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def offer_problems(offer: Mapping[str, Any], criteria: OfferCriteria) -> list[str]:
    """Why ``offer`` does not meet ``criteria`` (empty list = acceptable)."""
    problems = []
    try:
        price = float(offer.get("dph_total") or 0)
    except (TypeError, ValueError):
        price = 0.0
    if price <= 0:
        problems.append("no price")
    elif price > criteria.max_dph:
        problems.append(f"${price:.4f}/h is above max_dph ${criteria.max_dph:.4f}/h")
    if int(offer.get("num_gpus") or 0) != criteria.num_gpus:
        problems.append(f"{offer.get('num_gpus')} GPUs, want {criteria.num_gpus}")
    gpu = str(offer.get("gpu_name") or "")
    if criteria.gpu_names and not any(
        fnmatch.fnmatchcase(gpu, api_gpu_name(n)) or fnmatch.fnmatchcase(gpu, n)
        for n in criteria.gpu_names
    ):
        problems.append(f"GPU {gpu!r} not in {list(criteria.gpu_names)}")
    if criteria.min_gpu_ram_gb is not None:
        ram_mb = float(offer.get("gpu_ram") or 0)
        if ram_mb < criteria.min_gpu_ram_gb * MB_PER_GB:
            problems.append(f"{ram_mb / MB_PER_GB:.1f} GB GPU RAM < {criteria.min_gpu_ram_gb}")
    if criteria.min_disk_gb is not None:
        disk = float(offer.get("disk_space") or 0)
        if disk < criteria.min_disk_gb:
            problems.append(f"{disk:.0f} GB disk < {criteria.min_disk_gb}")
    if criteria.min_reliability is not None:
        rel = offer_reliability(offer)
        if rel < criteria.min_reliability:
            problems.append(f"reliability {rel:.4f} < {criteria.min_reliability}")
    if criteria.verified_only:
        verified = offer.get("verified")
        if verified is None:
            verified = offer.get("verification") == "verified"
        if not verified:
            problems.append("machine not verified")
    geolocation = str(offer.get("geolocation") or "")
    if criteria.region and not _region_matches(geolocation, criteria.region):
        problems.append(f"region {offer.get('geolocation')!r} is not {criteria.region!r}")
    if offer.get("rented") is True:
        problems.append("already rented")
    return problems


def select_offer(
    offers: Iterable[Mapping[str, Any]], criteria: OfferCriteria
) -> dict[str, Any] | None:
    """The cheapest acceptable offer, or None."""
    acceptable = [dict(o) for o in offers if not offer_problems(o, criteria)]
    if not acceptable:
        return None
    acceptable.sort(
        key=lambda o: (float(o["dph_total"]), -offer_reliability(o), int(o.get("id") or 0))
    )
    return acceptable[0]


def describe_offer(offer: Mapping[str, Any]) -> str:
    """One line for messages: ``offer 123: 1x RTX 4090 in Texas, US at $0.3500/h``."""
    price = float(offer.get("dph_total") or 0)
    where = offer.get("geolocation") or "unknown region"
    return (
        f"offer {offer.get('id')}: {offer.get('num_gpus')}x {offer.get('gpu_name')} in "
        f"{where} at ${price:.4f}/h"
    )


def port_env(ports: Iterable[int | str]) -> dict[str, str]:
    """``[8000, "9000/udp"]`` -> ``{"-p 8000:8000": "1", "-p 9000:9000/udp": "1"}``."""
    env: dict[str, str] = {}
    for port in ports:
        text = str(port).strip()
        number, _slash, proto = text.partition("/")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise OfferError(f"port {text!r} is not a port number (1-65535, optional /tcp|/udp)")
        if proto and proto not in ("tcp", "udp"):
            raise OfferError(f"port {text!r}: protocol must be tcp or udp")
        spec = f"{int(number)}:{int(number)}" + (f"/{proto}" if proto == "udp" else "")
        env[f"-p {spec}"] = "1"
    return env


def build_create_payload(
    *,
    image: str,
    disk_gb: float,
    label: str,
    env: Mapping[str, str] | None = None,
    ports: Iterable[int | str] = (),
    onstart: str | None = None,
    ssh_direct: bool = True,
    image_login: str | None = None,
) -> dict[str, Any]:
    """Body of ``PUT /api/v0/asks/<offer>/`` (an on-demand rental with SSH access)."""
    if not image:
        raise OfferError("image is required to rent an instance")
    if disk_gb <= 0:
        raise OfferError("disk must be greater than 0 GB")
    merged: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not name or any(ch.isspace() for ch in name):
            raise OfferError(f"environment variable name {name!r} is invalid")
        merged[str(name)] = str(value)
    merged.update(port_env(ports))
    body: dict[str, Any] = {
        "client_id": "me",
        "image": image,
        "env": merged,
        "disk": float(disk_gb),
        "label": label,
        "onstart": onstart or None,
        "runtype": "ssh_direc ssh_proxy" if ssh_direct else "ssh_proxy",
        "image_login": image_login,
        "python_utf8": False,
        "lang_utf8": False,
        "use_jupyter_lab": False,
        "force": False,
        "cancel_unavail": True,
    }
    return body

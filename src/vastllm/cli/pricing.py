"""Money, as pure functions: an offer's total price, the offer to rent, the spend so far.

**Total $/h of an offer** (what the cap is checked against):

- GPU: the offer's ``dph_base`` (compute without storage; ``dph_total`` when the API gives no base),
- storage: ``storage_cost`` ($/GB/month) x the disk to allocate / 730 h,
- bandwidth estimate: ``inet_down_cost`` x 2 GB/h + ``inet_up_cost`` x 0.5 GB/h by default
  (a ~20 GB model pulled once over a ~10 h session plus Claude Code's API traffic; settings
  ``bandwidth_down_gb_per_hour`` / ``bandwidth_up_gb_per_hour``).

**Spend so far** of an instance: hours since the API's ``start_date`` x its ``dph_total``. The API
does not say how long an instance was stopped, so for one that was stopped in between this is an
upper bound; a stopped instance's running cost is only its storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

HOURS_PER_MONTH = 730.0


def _num(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number == number else default  # NaN -> default


@dataclass(frozen=True)
class Price:
    """$/h of one offer or instance, by part."""

    gpu: float
    storage: float
    bandwidth: float

    @property
    def total(self) -> float:
        return self.gpu + self.storage + self.bandwidth

    def describe(self) -> str:
        return (
            f"${self.total:.4f}/h total (GPU ${self.gpu:.4f} + disk ${self.storage:.4f} "
            f"+ bandwidth estimate ${self.bandwidth:.4f})"
        )


def offer_price(
    offer: Mapping[str, Any],
    disk_gb: float,
    down_gb_per_hour: float = 2.0,
    up_gb_per_hour: float = 0.5,
) -> Price:
    """The offer's total $/h for ``disk_gb`` of disk and the bandwidth estimate."""
    base = _num(offer.get("dph_base"))
    gpu = base if base > 0 else _num(offer.get("dph_total"))
    storage = _num(offer.get("storage_cost")) * max(disk_gb, 0.0) / HOURS_PER_MONTH
    bandwidth = _num(offer.get("inet_down_cost")) * max(down_gb_per_hour, 0.0) + _num(
        offer.get("inet_up_cost")
    ) * max(up_gb_per_hour, 0.0)
    return Price(gpu=gpu, storage=storage, bandwidth=bandwidth)


@dataclass(frozen=True)
class Wanted:
    """What to rent (flags / configuration)."""

    max_price: float
    gpu_names: Sequence[str] = ()
    num_gpus: int = 1
    min_vram_gb: float | None = None
    disk_gb: float = 80.0
    min_reliability: float | None = None
    verified_only: bool = True
    region: str | None = None
    down_gb_per_hour: float = 2.0
    up_gb_per_hour: float = 0.5


@dataclass(frozen=True)
class Choice:
    """The outcome of an offer choice: the offer (None when nothing fits) and why others lost."""

    offer: dict[str, Any] | None
    price: Price | None
    considered: int
    over_cap: int
    cheapest_total: float | None  # cheapest total among matching offers, even above the cap


def _criteria(wanted: Wanted) -> Any:
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_offers import (
        OfferCriteria,
    )

    return OfferCriteria(
        max_dph=wanted.max_price,
        gpu_names=tuple(wanted.gpu_names),
        num_gpus=wanted.num_gpus,
        min_gpu_ram_gb=wanted.min_vram_gb,
        min_disk_gb=wanted.disk_gb,
        min_reliability=wanted.min_reliability,
        verified_only=wanted.verified_only,
        region=wanted.region or None,
    )


def search_query(wanted: Wanted) -> dict[str, Any]:
    """The offer search body (the collection's ``build_offer_query``: the module rents with the
    same criteria)."""
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_offers import (
        build_offer_query,
    )

    return dict(build_offer_query(_criteria(wanted), wanted.disk_gb))


def choose_offer(offers: Iterable[Mapping[str, Any]], wanted: Wanted) -> Choice:
    """The cheapest offer by TOTAL $/h that meets every criterion and whose total is at most
    ``wanted.max_price`` (ties: higher reliability, then lower id)."""
    from ansible_collections.vastllm.stack.plugins.module_utils.vastai_offers import (
        offer_problems,
        offer_reliability,
    )

    if not wanted.max_price or wanted.max_price <= 0:
        raise ValueError("a price cap (max_price > 0) is required to choose an offer")
    # The module's own checks with an unbounded price: the cap is applied to the total below.
    unbounded = _criteria(replace(wanted, max_price=float("inf")))
    matching: list[tuple[float, float, int, dict[str, Any], Price]] = []
    considered = 0
    for offer in offers:
        considered += 1
        if offer_problems(offer, unbounded):
            continue
        price = offer_price(offer, wanted.disk_gb, wanted.down_gb_per_hour, wanted.up_gb_per_hour)
        if price.gpu <= 0:
            continue
        matching.append(
            (price.total, -offer_reliability(offer), int(offer.get("id") or 0), dict(offer), price)
        )
    matching.sort(key=lambda row: row[:3])
    within = [row for row in matching if row[0] <= wanted.max_price + 1e-9]
    cheapest = matching[0][0] if matching else None
    if not within:
        return Choice(None, None, considered, len(matching), cheapest)
    best = within[0]
    return Choice(best[3], best[4], considered, len(matching) - len(within), cheapest)


def spend(start_date: Any, now: float, dph_total: Any) -> tuple[float, float]:
    """(hours since ``start_date``, dollars at ``dph_total``) — zero when the start is unknown or
    in the future."""
    start = _num(start_date)
    if start <= 0:
        return 0.0, 0.0
    hours = max(0.0, now - start) / 3600.0
    return hours, hours * max(_num(dph_total), 0.0)


def hourly_cost(instance: Mapping[str, Any], status: str) -> float:
    """What the instance costs per hour in its current state: ``dph_total`` while it runs, only
    its storage (``storage_total_cost``) while stopped."""
    if status == "running" or status == "loading":
        return max(_num(instance.get("dph_total")), 0.0)
    storage = _num(instance.get("storage_total_cost"))
    if storage <= 0:
        storage = (
            _num(instance.get("storage_cost")) * _num(instance.get("disk_space")) / HOURS_PER_MONTH
        )
    return max(storage, 0.0)

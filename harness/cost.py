"""Cost per document from recorded usage and the dated pricing catalog.

Token-priced backends (Bedrock) cost what their tokens cost. Hour-priced backends (SageMaker,
own GPUs) cost their instance time: per document at the throughput the run measured, and per
month as instances kept running for the volume (they are paid while idle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from migbench.catalog import load_model, load_packaged
from pydantic import BaseModel

HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = 30.4


class TokenPrice(BaseModel):
    input_per_1k: float
    output_per_1k: float
    region: str
    as_of: str
    source: str
    verified: bool = False


class HourlyPrice(BaseModel):
    per_hour: float | None
    region: str
    as_of: str
    source: str
    verified: bool = False


class PricingDefaults(BaseModel):
    sagemaker_instance: str
    local_instance: str
    volumes_per_day: list[int]


class Pricing(BaseModel):
    currency: str
    token: dict[str, TokenPrice]
    hourly: dict[str, HourlyPrice]
    defaults: PricingDefaults


def load_pricing(path: str | None = None) -> Pricing:
    return load_model(Pricing, path) if path else load_packaged(Pricing, "pricing.yaml")


def token_cost(price: TokenPrice, input_tokens: int | None, output_tokens: int | None) -> float | None:
    if input_tokens is None and output_tokens is None:
        return None
    return (input_tokens or 0) / 1000 * price.input_per_1k + (output_tokens or 0) / 1000 * price.output_per_1k


@dataclass
class RunCost:
    basis: str  # "token" | "hourly" | "none"
    price_key: str | None
    per_doc: float | None  # mean over documents that completed
    per_1000: float | None
    docs_per_hour: float | None  # measured throughput of the run (hourly basis)
    note: str
    price: dict[str, Any] | None = None

    def monthly(self, docs_per_day: float) -> float | None:
        if self.per_doc is None:
            return None
        if self.basis == "token":
            return self.per_doc * docs_per_day * DAYS_PER_MONTH
        if self.basis == "hourly" and self.price and self.docs_per_hour:
            per_hour = self.price["per_hour"]
            instances = max(1, math.ceil(docs_per_day / (self.docs_per_hour * 24)))
            return instances * per_hour * HOURS_PER_MONTH
        return None


def price_basis(run: dict[str, Any], pricing: Pricing, gpu_hourly: float | None = None) -> tuple[str, str | None]:
    family = run.get("family")
    if run["backend"] in pricing.token:
        return "token", run["backend"]
    if family == "sagemaker":
        inst = (run.get("config") or {}).get("instance_type") or pricing.defaults.sagemaker_instance
        return "hourly", inst
    if family == "local":
        return "hourly", pricing.defaults.local_instance
    return "none", None


def run_cost(run: dict[str, Any], docs: list[dict[str, Any]], pricing: Pricing,
             gpu_hourly: float | None = None) -> RunCost:
    basis, key = price_basis(run, pricing)
    ok = [d for d in docs if d["status"] == "ok"]
    if basis == "token":
        price = pricing.token[key]
        costs = [token_cost(price, d["input_tokens"], d["output_tokens"]) for d in docs]
        costs = [c for c in costs if c is not None]
        if not costs:
            return RunCost(basis, key, None, None, None, "no token usage recorded", price.model_dump())
        # Failed attempts that consumed tokens are paid too, so divide by completed documents.
        per_doc = sum(costs) / max(1, len(ok))
        return RunCost(basis, key, per_doc, per_doc * 1000, None,
                       f"{price.source} (as of {price.as_of})", price.model_dump())
    if basis == "hourly":
        price = pricing.hourly.get(key)
        per_hour = gpu_hourly if (gpu_hourly is not None and run.get("family") == "local") else (
            price.per_hour if price else None)
        wall = run.get("wall_s") or 0.0
        if per_hour is None or not ok or wall <= 0:
            why = "no hourly price" if per_hour is None else "no completed documents or run time"
            return RunCost(basis, key, None, None, None, f"not measured: {why}",
                           price.model_dump() if price else None)
        docs_per_hour = len(ok) / (wall / 3600)
        per_doc = per_hour / docs_per_hour
        p = price.model_dump() if price else {}
        p["per_hour"] = per_hour
        return RunCost(basis, key, per_doc, per_doc * 1000, docs_per_hour,
                       f"{per_hour:.2f}/h at the run's measured {docs_per_hour:.0f} docs/h", p)
    return RunCost("none", None, 0.0 if run.get("family") == "ocr" else None, None, None,
                   "runs on the machine you already have (CPU); no marginal price" if run.get("family") == "ocr"
                   else "no price for this backend")


def break_even_docs_per_day(token_per_doc: float, hourly: RunCost) -> float | None:
    """Daily volume above which one always-on instance is cheaper than paying per token."""
    if not token_per_doc or hourly.basis != "hourly" or not hourly.price or not hourly.docs_per_hour:
        return None
    monthly_instance = hourly.price["per_hour"] * HOURS_PER_MONTH
    volume = monthly_instance / (token_per_doc * DAYS_PER_MONTH)
    # One instance can only serve so much; past that it is more instances, not break-even.
    return volume if volume <= hourly.docs_per_hour * 24 else None

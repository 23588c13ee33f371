"""Cost per document from recorded usage and the dated pricing catalog.

Prices belong to what is billed, never to a backend's name: a token price to the model id that
was called (an inference profile resolves to its model's price times the profile's uplift), an
hourly price to the instance type. The runner stores each document's cost when it completes; a
run's cost is the sum of those stored costs, so a report never reprices a run after the fact.
Hour-priced backends (SageMaker, own GPUs) cost their instance time: per document at the
throughput the run measured, and per month as instances kept running for the volume (they are
paid while idle).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from migbench.catalog import load_model, load_packaged
from migbench.contracts import RunRecord
from migbench.doctable import DocTable, Documents
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = 30.4
_URL = re.compile(r"https?://\S+")


class _Dated(BaseModel):
    """Every price says when and where it was read and whether it was checked there."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    region: str
    as_of: _dt.date
    source: str = Field(min_length=1)
    verified: StrictBool

    @model_validator(mode="after")
    def _verified_cites_a_page(self) -> _Dated:
        if self.verified and not _URL.search(self.source):
            raise ValueError(f"verified: true needs a public page a user can follow in source, got {self.source!r}")
        return self


class TokenPrice(_Dated):
    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(ge=0)
    # Prompt caching (Bedrock bills tokens read from and written to the cache at their own prices and
    # only the rest at input_per_1k); None: not in the catalog, so an answer with such tokens is not priced.
    cache_read_per_1k: float | None = Field(None, ge=0)
    cache_write_per_1k: float | None = Field(None, ge=0)


class ProfilePrice(_Dated):
    """A cross-region inference profile bills as its model, times a regional uplift."""

    model: str
    uplift: float = Field(default=1.0, gt=0)


class HourlyPrice(_Dated):
    per_hour: float | None = Field(ge=0)


class PagePrice(_Dated):
    """APIs billed per page processed (Textract AnalyzeExpense), whatever the text on it."""

    per_page: float = Field(ge=0)


class BatchDiscount(_Dated):
    """Bedrock batch inference, billed as a fraction of the model's on-demand token price."""

    factor: float = Field(gt=0, le=1)


class PricingDefaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sagemaker_instance: str
    local_instance: str
    volumes_per_day: list[int]


class Pricing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    currency: str
    token: dict[str, TokenPrice]  # keyed by model id
    profiles: dict[str, ProfilePrice] = {}  # keyed by inference profile id
    hourly: dict[str, HourlyPrice]  # keyed by instance type
    page: dict[str, PagePrice] = {}  # keyed by the API billed per page (the backend's model id)
    batch: dict[str, BatchDiscount] = {}  # keyed by model id (a profile bills as its model)
    defaults: PricingDefaults

    @model_validator(mode="after")
    def _profiles_name_priced_models(self) -> Pricing:
        for pid, p in self.profiles.items():
            if p.model not in self.token:
                raise ValueError(f"profiles.{pid}: model {p.model!r} has no entry under token")
            if pid in self.token:
                raise ValueError(f"{pid}: priced both as a model and as a profile")
        return self


def load_pricing(path: str | None = None) -> Pricing:
    return load_model(Pricing, path) if path else load_packaged(Pricing, "pricing.yaml")


def _billed_id(model_id: str) -> str:
    """The id Bedrock bills: a foundation-model or inference-profile ARN ends in that id."""
    if model_id.startswith("arn:") and (":foundation-model/" in model_id or ":inference-profile/" in model_id):
        return model_id.rsplit("/", 1)[1]
    return model_id


def token_price(pricing: Pricing, model_id: str | None) -> TokenPrice | None:
    """The per-token price of a model id or inference profile id; None when the catalog does not
    price it (never a guess from a similar name or the backend)."""
    if not model_id:
        return None
    key = _billed_id(model_id)
    if key in pricing.token:
        return pricing.token[key]
    prof = pricing.profiles.get(key)
    if prof is None:
        return None
    base = pricing.token[prof.model]
    up = prof.uplift
    return TokenPrice(input_per_1k=base.input_per_1k * up, output_per_1k=base.output_per_1k * up,
                      cache_read_per_1k=None if base.cache_read_per_1k is None else base.cache_read_per_1k * up,
                      cache_write_per_1k=None if base.cache_write_per_1k is None else base.cache_write_per_1k * up,
                      region=prof.region, as_of=min(prof.as_of, base.as_of), verified=prof.verified and base.verified,
                      source=f"{prof.source}; x{prof.uplift:g} of {prof.model}: {base.source}")


def token_prices(pricing: Pricing) -> dict[str, TokenPrice]:
    """Every per-token price the catalog resolves, models and profiles (for the report's table)."""
    return {k: p for k in [*pricing.token, *pricing.profiles] if (p := token_price(pricing, k)) is not None}


def token_cost(price: TokenPrice, input_tokens: int | None, output_tokens: int | None,
               cache_read: int | None = None, cache_write: int | None = None) -> float | None:
    """Input (uncached), output and cache tokens at their prices; None when nothing was counted or
    cache tokens came back that the catalog has no price for (never priced as plain input)."""
    if input_tokens is None and output_tokens is None and not cache_read and not cache_write:
        return None
    cost = (input_tokens or 0) / 1000 * price.input_per_1k + (output_tokens or 0) / 1000 * price.output_per_1k
    for tokens, per_1k in ((cache_read, price.cache_read_per_1k), (cache_write, price.cache_write_per_1k)):
        if tokens:
            if per_1k is None:
                return None
            cost += tokens / 1000 * per_1k
    return cost


def cache_saving(price: TokenPrice, cache_read: int | None, cache_write: int | None) -> float | None:
    """What the cached tokens would have cost at the input price minus what they cost (negative when
    writes cost more than they saved); None when a cache price is unknown."""
    saving = 0.0
    for tokens, per_1k in ((cache_read, price.cache_read_per_1k), (cache_write, price.cache_write_per_1k)):
        if tokens:
            if per_1k is None:
                return None
            saving += tokens / 1000 * (price.input_per_1k - per_1k)
    return saving


def page_price(pricing: Pricing, model_id: str | None) -> PagePrice | None:
    return pricing.page.get(model_id) if model_id else None


def batch_discount(pricing: Pricing, model_id: str | None) -> BatchDiscount | None:
    """The batch price of a model id or inference profile as a fraction of on-demand; None when the
    catalog does not say (never assumed)."""
    if not model_id:
        return None
    billed = _billed_id(model_id)
    if billed in pricing.profiles:
        billed = pricing.profiles[billed].model
    return pricing.batch.get(billed)


def document_cost(pricing: Pricing, model_id: str | None, response: Any) -> float | None:
    """What one answer cost: tokens x the model's token price, or the pages the service billed
    (Response.extra["billed_pages"]) x its page price; None when neither is known."""
    price = token_price(pricing, model_id)
    if price is not None:
        return token_cost(price, response.input_tokens, response.output_tokens,
                          getattr(response, "cache_read_tokens", None), getattr(response, "cache_write_tokens", None))
    per_page = page_price(pricing, model_id)
    pages = (response.extra or {}).get("billed_pages")
    if per_page is not None and isinstance(pages, int) and pages > 0:
        return pages * per_page.per_page
    return None


@dataclass
class RunCost:
    basis: str  # "token" | "page" | "hourly" | "none"
    price_key: str | None  # the model / profile id or instance type priced; None when nothing is
    per_doc: float | None  # mean over documents that completed
    per_1000: float | None
    docs_per_hour: float | None  # measured throughput of the run (hourly basis)
    note: str
    price: dict[str, Any] | None = None
    batch: BatchComparison | None = None  # documents answered through a batch job, priced both ways
    cache: CacheSummary | None = None  # prompt caching: cached tokens and what they saved

    def monthly(self, docs_per_day: float) -> float | None:
        if self.per_doc is None:
            return None
        if self.basis in ("token", "page"):
            return self.per_doc * docs_per_day * DAYS_PER_MONTH
        if self.basis == "hourly" and self.price and self.docs_per_hour:
            per_hour = self.price["per_hour"]
            instances = max(1, math.ceil(docs_per_day / (self.docs_per_hour * 24)))
            return instances * per_hour * HOURS_PER_MONTH
        return None


@dataclass
class BatchComparison:
    """The documents of a run that a Bedrock batch job answered: what they cost at the batch price and
    what the same recorded tokens cost on demand (the same documents, the same usage, two prices)."""

    documents: int  # answered through a batch job
    priced: int  # of those, with both prices known
    batch_usd: float | None
    on_demand_usd: float | None
    factor: float | None  # batch price / on-demand price, from the catalog
    verified: bool | None  # the catalog's batch price flag
    as_of: str | None

    @property
    def saving_usd(self) -> float | None:
        if self.batch_usd is None or self.on_demand_usd is None:
            return None
        return self.on_demand_usd - self.batch_usd


def batch_comparison(docs: Documents) -> BatchComparison | None:
    """On-demand vs batch cost of the documents a batch job answered; None when there are none.

    The batch collector stores each answer's batch cost (`cost_usd`) and its on-demand price
    (`extra["on_demand_cost_usd"]`); an unknown batch price stays unknown, never the on-demand one."""
    t = DocTable.of(docs)
    batch = t.flags["batch"]
    n = int(batch.sum())
    if not n:
        return None
    cost, od = t.numbers["cost_usd"], t.numbers["on_demand_cost_usd"]
    priced = batch & ~np.isnan(cost) & ~np.isnan(od)
    factor = verified = as_of = None
    for bp in t.batch_prices:  # the last one seen names the factor and date; verified only if all are
        factor, as_of = bp.get("factor"), bp.get("as_of")
        verified = bool(bp.get("verified")) if verified is None else verified and bool(bp.get("verified"))
    k = int(priced.sum())
    return BatchComparison(n, k, math.fsum(cost[priced].tolist()) if k else None,
                           math.fsum(od[priced].tolist()) if k else None, factor, verified, as_of)


@dataclass
class CacheSummary:
    """Prompt caching over a run: the cache tokens its answers reported and what they saved."""

    documents: int  # answers (failed ones included: they were billed) that reported cache tokens
    read_tokens: int
    write_tokens: int
    saving_usd: float | None  # at the input price minus at the cache prices; None: a cache price unknown
    verified: bool

    @property
    def hit_rate(self) -> float | None:
        """Share of the cached tokens that were reads (writes are the misses that filled the cache)."""
        total = self.read_tokens + self.write_tokens
        return self.read_tokens / total if total else None


def cache_summary(docs: Documents, price: TokenPrice) -> CacheSummary | None:
    """None when no answer of the run reported cache tokens (caching off, or never used)."""
    t = DocTable.of(docs)
    read = np.nan_to_num(t.numbers["cache_read_tokens"], nan=0.0)
    write = np.nan_to_num(t.numbers["cache_write_tokens"], nan=0.0)
    used = (read != 0) | (write != 0)
    if not used.any():
        return None
    r, w = int(read[used].sum()), int(write[used].sum())
    return CacheSummary(int(used.sum()), r, w, cache_saving(price, r, w), price.verified)


def price_basis(run: RunRecord, pricing: Pricing) -> tuple[str, str | None]:
    """How a run is priced and by which catalog key: its model id, its instance type, or nothing."""
    family, model = run.family, run.model
    if token_price(pricing, model) is not None:
        return "token", _billed_id(model)
    if page_price(pricing, model) is not None:
        return "page", model
    if family == "sagemaker":
        inst = (run.config or {}).get("instance_type") or pricing.defaults.sagemaker_instance
        return "hourly", inst
    if family == "local":
        return "hourly", pricing.defaults.local_instance
    if family == "bedrock":
        return "token", _billed_id(model) if model else None  # billed per token, but not in the catalog
    return "none", None


def run_cost(run: RunRecord, docs: Documents, pricing: Pricing,
             gpu_hourly: float | None = None) -> RunCost:
    """Token-priced runs: the sum of the costs stored with each document (priced when it ran).
    Hour-priced runs: the instance's hourly price over the run's measured throughput."""
    basis, key = price_basis(run, pricing)
    t = DocTable.of(docs)
    ok = t.flags["status_ok"]
    n_ok = int(ok.sum())
    cost = t.numbers["cost_usd"]
    costs = cost[~np.isnan(cost)].tolist()
    unpriced = ok & np.isnan(cost)
    if basis == "token":
        price = token_price(pricing, key)
        if price is None:
            return RunCost(basis, key, None, None, None,
                           f"not priced: model {key or '(none recorded)'} has no price in pricing.yaml "
                           "(add it, or pass a pricing file)")
        dumped = price.model_dump(mode="json")
        cache_tokens = (np.nan_to_num(t.numbers["cache_read_tokens"]) != 0) | (
            np.nan_to_num(t.numbers["cache_write_tokens"]) != 0)
        cached = bool((unpriced & cache_tokens).any())
        why = "prompt-cache tokens and no cache price in pricing.yaml" if cached else "no token usage recorded"
        if not costs:
            return RunCost(basis, key, None, None, None, f"no cost recorded ({why})", dumped)
        if unpriced.any():
            return RunCost(basis, key, None, None, None,
                           f"{int(unpriced.sum())} of {n_ok} completed documents have no stored cost "
                           f"({why}), e.g. {t.ids(unpriced)[0]}", dumped)
        # Failed attempts that consumed tokens are paid too, so divide by completed documents.
        per_doc = math.fsum(costs) / max(1, n_ok)
        return RunCost(basis, key, per_doc, per_doc * 1000, None,
                       f"{price.source} (as of {price.as_of})", dumped, batch_comparison(t),
                       cache_summary(t, price))
    if basis == "page":
        pp = page_price(pricing, key)
        assert pp is not None  # price_basis chose "page" because it exists
        if not costs or unpriced.any():
            return RunCost(basis, key, None, None, None, f"{int(unpriced.sum())} of {n_ok} completed documents have "
                           "no stored cost (no billed pages recorded)", pp.model_dump(mode="json"))
        per_doc = math.fsum(costs) / max(1, n_ok)  # pages of failed attempts are billed too
        return RunCost(basis, key, per_doc, per_doc * 1000, None,
                       f"{pp.per_page:g}/page: {pp.source} (as of {pp.as_of})", pp.model_dump(mode="json"))
    if basis == "hourly":
        price = pricing.hourly.get(key)
        per_hour = gpu_hourly if (gpu_hourly is not None and run.family == "local") else (
            price.per_hour if price else None)
        wall = run.wall_s or 0.0
        if per_hour is None or not n_ok or wall <= 0:
            why = "no hourly price" if per_hour is None else "no completed documents or run time"
            return RunCost(basis, key, None, None, None, f"not measured: {why}",
                           price.model_dump(mode="json") if price else None)
        docs_per_hour = n_ok / (wall / 3600)
        per_doc = per_hour / docs_per_hour
        p = price.model_dump(mode="json") if price else {}
        p["per_hour"] = per_hour
        return RunCost(basis, key, per_doc, per_doc * 1000, docs_per_hour,
                       f"{per_hour:.2f}/h at the run's measured {docs_per_hour:.0f} docs/h", p)
    return RunCost("none", None, 0.0 if run.family == "ocr" else None, None, None,
                   "runs on the machine you already have (CPU); no marginal price" if run.family == "ocr"
                   else "no price for this backend")


def break_even_docs_per_day(token_per_doc: float, hourly: RunCost) -> float | None:
    """Daily volume above which one always-on instance is cheaper than paying per token."""
    if not token_per_doc or hourly.basis != "hourly" or not hourly.price or not hourly.docs_per_hour:
        return None
    monthly_instance = hourly.price["per_hour"] * HOURS_PER_MONTH
    volume = monthly_instance / (token_per_doc * DAYS_PER_MONTH)
    # One instance can only serve so much; past that it is more instances, not break-even.
    return volume if volume <= hourly.docs_per_hour * 24 else None

"""Sample-size planning for non-inferiority: the textbook formula, the exact power, the per-type plan."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest
from migbench.contracts import DocResult, Response, UsageError
from migbench.options import resolve_thresholds
from migbench.planning import (
    exact_power,
    main,
    plan,
    power_checks,
    required_n,
    required_n_normal,
    underpowered,
)


def test_normal_formula_matches_lehrs_textbook_rule():
    """Two-sided 0.05 and 80% power: n = (1.95996 + 0.84162)^2 sd^2 / d^2 = 7.849 sd^2 / d^2
    (Lehr's "8 s^2/d^2" for a paired mean). sd 0.1, margin 0.02, no true difference:
    7.849 x 0.01 / 0.0004 = 196.2 -> 197 documents."""
    assert (NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)) ** 2 == pytest.approx(7.8489, abs=1e-4)
    assert required_n_normal(0.1, 0.02) == 197
    # Chow et al.'s non-inferiority form with a one-sided 5% test (two-sided alpha 0.10), sd 1, margin 0.5,
    # true difference 0.5: (1.6449 + 0.8416)^2 x 1 / (0.5 + 0.5)^2 = 6.18 -> 7
    assert required_n_normal(1.0, 0.5, alpha=0.10, assumed_diff=0.5) == 7


@pytest.mark.parametrize(("sd", "margin", "alpha", "power", "diff"), [
    (0.1, 0.02, 0.05, 0.8, 0.0), (0.5, 0.2, 0.05, 0.8, 0.0), (0.3, 0.02, 0.05, 0.9, 0.0),
    (1.0, 0.5, 0.10, 0.8, 0.5), (0.2, 0.05, 0.01, 0.8, -0.01),
])
def test_required_n_is_the_smallest_n_whose_exact_power_reaches_the_target(sd, margin, alpha, power, diff):
    n = required_n(sd, margin, alpha=alpha, power=power, assumed_diff=diff)
    assert exact_power(n, sd, margin, alpha=alpha, assumed_diff=diff) >= power
    assert exact_power(n - 1, sd, margin, alpha=alpha, assumed_diff=diff) < power
    # the t answer is never below the normal one (t quantiles are wider)
    assert n >= required_n_normal(sd, margin, alpha=alpha, power=power, assumed_diff=diff)


def test_sd_01_margin_002_needs_199_documents_with_t():
    # exact noncentral-t power: 198 documents 0.7997, 199 documents 0.8017
    assert required_n(0.1, 0.02) == 199
    assert exact_power(199, 0.1, 0.02) == pytest.approx(0.8017, abs=1e-4)


def test_unreachable_and_degenerate_cases():
    assert required_n(0.1, 0.02, assumed_diff=-0.02) is None  # true difference at the margin: never shown
    assert required_n(0.1, 0.0) is None  # margin 0 and no true difference: never shown
    assert required_n(0.0, 0.02) == 2  # no spread: two documents make an interval
    assert underpowered(50, 199) and not underpowered(199, 199) and underpowered(10_000, None)
    with pytest.raises(UsageError, match="--power"):
        required_n(0.1, 0.02, power=1.0)
    with pytest.raises(UsageError, match="--margin"):
        required_n(0.1, -0.1)


def _rows(values: dict[str, float | None], doc_type: str) -> list[DocResult]:
    return [DocResult(k, doc_type, "clean", "ok" if v is not None else "failed", Response(), doc_f1=v)
            for k, v in values.items()]


BASE = _rows({"i1": 0.9, "i2": 0.8, "i3": 1.0, "i4": 0.7}, "invoice") + _rows({"r1": 1.0, "r2": 0.9}, "receipt")
CAND = _rows({"i1": 0.9, "i2": 0.7, "i3": 1.0, "i4": 0.8}, "invoice") + _rows({"r1": 1.0, "r2": None}, "receipt")


def test_plan_from_paired_differences_per_type():
    rows = {r.doc_type: r for r in plan(BASE, CAND, margin=0.02)}
    inv = rows["invoice"]
    # invoice differences 0, -0.1, 0, +0.1: mean 0, sd sqrt(0.02 / 3)
    assert inv.n == 4 and inv.observed_diff == pytest.approx(0.0)
    assert inv.sd == pytest.approx(math.sqrt(0.02 / 3))
    assert inv.required == required_n(math.sqrt(0.02 / 3), 0.02) and inv.status == "underpowered"
    # the failed receipt counts 0: differences 0 and -0.9
    rec = rows["receipt"]
    assert rec.observed_diff == pytest.approx(-0.45) and rec.sd == pytest.approx(math.sqrt(0.405))
    assert rows["all"].n == 6 and rows["all"].sd_basis == "sd of the paired differences"
    # planning on what was observed: the receipts' -0.45 is below -0.02, so non-inferiority is out of reach
    observed = {r.doc_type: r for r in plan(BASE, CAND, margin=0.02, assumed_diff=None)}
    assert observed["receipt"].status == "unreachable" and observed["receipt"].required is None


def test_plan_from_the_baseline_alone_doubles_its_variance():
    rows = {r.doc_type: r for r in plan(BASE, margin=0.02)}
    inv = rows["invoice"]
    sd = math.sqrt(math.fsum((x - 0.85) ** 2 for x in (0.9, 0.8, 1.0, 0.7)) / 3)
    assert inv.sd == pytest.approx(math.sqrt(2) * sd) and inv.observed_diff is None
    assert inv.required == required_n(math.sqrt(2) * sd, 0.02)
    with pytest.raises(UsageError, match="needs --candidate"):
        plan(BASE, margin=0.02, assumed_diff=None)


def test_power_checks_use_the_thresholds_margin_and_confidence():
    th = resolve_thresholds(None).thresholds
    checks = {p.doc_type: p for p in power_checks(CAND, BASE, th)}
    sd = math.sqrt(0.02 / 3)
    assert checks["invoice"].required == required_n(sd, th.non_inferiority.margin, alpha=1 - th.confidence)
    assert checks["invoice"].underpowered


def test_plan_command_prints_json(tmp_path, capsys):
    from tests.harness.test_compare import store_two_runs

    results, a, b = store_two_runs(tmp_path)
    assert main(["--results", str(results), "--baseline", a, "--candidate", b, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"] == a and out["candidate"] == b and out["margin"] == 0.02
    assert [r["doc_type"] for r in out["plan"]] == ["all", "bank_statement", "invoice", "receipt"]
    assert main(["--results", str(results), "--baseline", a]) == 0
    assert "documents needed" in capsys.readouterr().out
    assert main(["--results", str(tmp_path / "nowhere"), "--baseline", a]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "no migbench" in err and "store" in err

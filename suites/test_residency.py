"""Residency: every request the run made is in its audit log, signed for and sent to an allowed
(Australian) region and host; the models it used are offered there; the IAM policy generated for
it cannot reach another region. Fails closed: a cloud run without an audit log fails.

Backends that send nothing over the network (ocr, local) must have an EMPTY audit log.
"""

from __future__ import annotations

import pytest
from migbench import gates
from migbench.residency import loopback_allowed_by_env

pytestmark = pytest.mark.migbench


@pytest.fixture(scope="module")
def audit(migbench_run):
    store, run, _ = migbench_run
    return store.audit(run.run_id)


@pytest.fixture(scope="module")
def cloud(migbench_run):
    _, run, _ = migbench_run
    if run.family in gates.OFFLINE_FAMILIES:
        pytest.skip(f"{run.backend} is {run.family}: sends nothing over the network (see "
                    "test_offline_backend_sent_nothing)")
    return run


def _policy():
    from migbench.residency import load_policy
    return load_policy()


def test_backend_family_is_known(migbench_run):
    _, run, _ = migbench_run
    known = gates.OFFLINE_FAMILIES | gates.CLOUD_FAMILIES
    assert run.family in known, (f"{run.backend}: family {run.family!r} is neither offline "
                                    f"({', '.join(sorted(gates.OFFLINE_FAMILIES))}) nor a known cloud family: "
                                    "residency cannot be judged")


def test_offline_backend_sent_nothing(migbench_run, audit):
    _, run, _ = migbench_run
    if run.family not in gates.OFFLINE_FAMILIES:
        pytest.skip(f"{run.backend} is a {run.family} backend: its audit log is checked below")
    assert audit == [], f"{run.backend} ({run.family}) is offline but its run logged {len(audit)} requests"


def test_audit_log_covers_every_document(cloud, migbench_run, audit):
    _, run, rows = migbench_run
    assert audit, f"{run.backend}: cloud run {run.run_id} has no audit log: residency unproven"
    unaudited = gates.unaudited_documents(rows, audit)
    assert not unaudited, f"{run.backend}: {len(unaudited)} completed documents have no audit entry: {unaudited[:5]}"


def test_audit_entries_in_allowed_regions_and_hosts(cloud, audit):
    run = cloud
    if not audit:
        pytest.fail(f"{run.backend}: no audit log to check", pytrace=False)
    loopback = bool(run.emulated or run.config.get("allow_loopback")
                    or loopback_allowed_by_env())
    bad = gates.audit_violations(audit, _policy(), allow_loopback=loopback)
    assert not bad, f"{run.backend}: {len(bad)} audit entries break residency: " + "; ".join(bad[:5])


def test_models_offered_in_region(cloud):
    """The run's model id / profile is offered in its region (catalog) and routes only to allowed regions."""
    from migbench.residency import check_model_id, load_model_catalog

    run = cloud
    if run.family != "bedrock":
        pytest.skip(f"{run.family} endpoints carry no model catalog entry; judged by host above")
    describe = run.describe
    region = describe.get("region")
    policy, catalog = _policy(), load_model_catalog()
    why = check_model_id(run.model, region, policy, catalog.base_regions())
    assert why is None, f"{run.backend}: {why}"
    # Destinations read live at preflight (GetInferenceProfile) win over the catalog's claim; the
    # allowed set is the run's own (a user may have added e.g. ap-southeast-6; the report says so).
    live = describe.get("profile_destinations")
    allowed = (describe.get("residency") or {}).get("allowed_destinations") or policy.destinations
    entry = catalog.by_model_id(run.model)
    assert live is not None or entry is not None, f"{run.backend}: {run.model} is not in bedrock_models.yaml"
    destinations = live if live is not None else entry.destinations  # type: ignore[union-attr]
    outside = [r for r in destinations if r not in allowed]
    assert not outside, f"{run.backend}: {run.model} routes to {outside} outside {allowed}"


def test_iam_policy_cannot_reach_other_regions(cloud):
    from migbench.iam import least_privilege_policy, policy_regions

    run = cloud
    policy = _policy()
    if run.family == "bedrock":
        doc = least_privilege_policy([run.model])
    else:
        endpoint = run.config.get("endpoint_name") or run.model
        doc = least_privilege_policy([], sagemaker_endpoints=[endpoint])
    reachable = policy_regions(doc)
    assert reachable and reachable <= set(policy.allowed_regions), (
        f"{run.backend}: generated IAM policy reaches {sorted(reachable)}, allowed {policy.allowed_regions}")
    denies = [s for s in doc["Statement"] if s.get("Effect") == "Deny"]
    assert any((s.get("Condition") or {}).get("StringNotEquals", {}).get("aws:RequestedRegion") for s in denies), \
        f"{run.backend}: generated IAM policy has no explicit deny outside the allowed regions"

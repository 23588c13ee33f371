"""The audit log digested in one pass gives the report's residency section the same figures as the
full log did, while the judge sees each distinct destination once (not each request)."""

from __future__ import annotations

from migbench.audit_digest import AuditDigest
from migbench.contracts import RunRecord
from migbench.report import catalog_rows, residency_judge
from migbench.report_data import residency_view

SYD = "bedrock-runtime.ap-southeast-2.amazonaws.com"
VIRGINIA = "bedrock-runtime.us-east-1.amazonaws.com"
NOVA = "amazon.nova-pro-v1:0"
GLOBAL = "global.amazon.nova-pro-v1:0"
PROFILE_REASON = "inference profile 'global.amazon.nova-pro-v1:0' (global.) routes outside the allowed regions"


def _entry(doc: str, region, host, model, status, *, allowed=True, reason=None, bytes_sent=1000, attempt=1):
    return {"run_id": "r", "backend": "nova-pro", "service": "bedrock-runtime", "operation": "Converse",
            "region": region, "host": host, "model_id": model, "doc_id": doc, "request_id": f"req-{doc}-{attempt}",
            "status": status, "attempt": attempt, "bytes_sent": bytes_sent, "allowed": allowed, "reason": reason}


# Sent in policy, a timeout (no status), a throttled attempt then its retry, one sent to Virginia,
# one to a loopback emulator, and three refused before sending.
LOG = [
    _entry("d1", "ap-southeast-2", SYD, NOVA, 200),
    _entry("d2", "ap-southeast-2", SYD, NOVA, None, reason="timeout"),
    _entry("d3", "ap-southeast-2", SYD, NOVA, 429),
    _entry("d3", "ap-southeast-2", SYD, NOVA, 200, attempt=2),
    _entry("d4", "us-east-1", VIRGINIA, NOVA, 200, bytes_sent=500),
    _entry("d5", "ap-southeast-2", "127.0.0.1", NOVA, 200, bytes_sent=None),
    _entry("d6", "us-east-1", VIRGINIA, GLOBAL, None, allowed=False, reason=PROFILE_REASON, bytes_sent=0),
    _entry("d7", "ap-southeast-2", SYD, None, None, allowed=False, bytes_sent=0),
    _entry("d8", "us-east-1", VIRGINIA, GLOBAL, None, allowed=False, reason=PROFILE_REASON, bytes_sent=0),
]
VIRGINIA_REASONS = [
    ("region 'us-east-1' is not an allowed region (ap-southeast-2, ap-southeast-4)", 1),
    (f"host '{VIRGINIA}' is not an allowed bedrock-runtime endpoint in ap-southeast-2, ap-southeast-4", 1),
    ("base model 'amazon.nova-pro-v1:0' is not offered in 'us-east-1' per the catalog (offered: ap-southeast-2)", 1),
]
LOOPBACK_REASON = ("host '127.0.0.1' is loopback: allowed only with allow_loopback (or MIGBENCH_ALLOW_LOOPBACK=1)", 1)


def _expected(violations: list[tuple[str, int]]) -> dict:
    return {
        "entries": 9, "sent": 6, "refused": 3, "ok": False,
        "summary": f"{sum(n for _, n in violations)} sent request(s) outside the residency policy",
        "regions": [("ap-southeast-2", 5), ("us-east-1", 1)],
        # ties keep the order first seen (Virginia before the loopback), as a Counter over the log did
        "hosts": [(SYD, 4), (VIRGINIA, 1), ("127.0.0.1", 1)],
        "models": [(NOVA, 6)],
        "operations": [("bedrock-runtime:Converse", 6)],
        "statuses": [("200", 4), ("None", 1), ("429", 1)],
        "refused_reasons": [(PROFILE_REASON, 2), ("no reason recorded", 1)],
        "refused_targets": [(f"us-east-1 {GLOBAL}", 2), ("ap-southeast-2 None", 1)],
        "violations": violations,
        "bytes_sent": 1000 * 4 + 500,  # the loopback request recorded no size
        "notes": [],
    }


def test_a_mixed_log_gives_the_residency_figures_worked_out_by_hand() -> None:
    run = RunRecord(run_id="r", backend="nova-pro", family="bedrock", model=NOVA)
    assert residency_view(run, LOG, residency_judge()) == _expected([*VIRGINIA_REASONS, LOOPBACK_REASON])


def test_an_emulated_run_may_send_to_loopback_yet_never_outside_the_policy() -> None:
    run = RunRecord(run_id="r", backend="nova-pro", family="bedrock", model=NOVA, emulated=True)
    assert residency_view(run, LOG, residency_judge()) == _expected(VIRGINIA_REASONS)


def test_a_digest_read_once_from_a_stream_equals_the_list_it_came_from() -> None:
    run = RunRecord(run_id="r", backend="nova-pro", family="bedrock", model=NOVA)
    judge = residency_judge()
    assert residency_view(run, AuditDigest.from_entries(iter(LOG)), judge) == residency_view(run, LOG, judge)


def test_the_judge_sees_each_distinct_destination_once_and_its_reasons_count_per_request() -> None:
    seen: list[dict] = []

    def judge(entry, emulated):
        seen.append(dict(entry))
        return ["outside"] if entry["region"] == "us-east-1" else []

    log = [_entry(f"a{i}", "ap-southeast-2", SYD, NOVA, 200) for i in range(700)]
    log += [_entry(f"b{i}", "us-east-1", VIRGINIA, NOVA, 200) for i in range(300)]
    log += [_entry(f"c{i}", "us-east-1", VIRGINIA, NOVA, 200, allowed=False, reason="refused") for i in range(50)]
    view = residency_view(RunRecord(run_id="r", backend="nova-pro", family="bedrock"), log, judge)
    assert len(seen) == 2  # two destinations sent to; refusals are never re-judged
    assert seen[1] == {"region": "us-east-1", "host": VIRGINIA, "service": "bedrock-runtime",
                       "operation": "Converse", "model_id": NOVA, "status": 200}
    assert view["violations"] == [("outside", 300)] and view["summary"] == "300 sent request(s) outside the residency policy"
    assert (view["entries"], view["sent"], view["refused"], view["bytes_sent"]) == (1050, 1000, 50, 1_000_000)


def test_a_digest_holds_one_count_per_destination_not_one_row_per_request() -> None:
    digest = AuditDigest.from_entries(_entry(f"d{i}", "ap-southeast-2", SYD, NOVA, 200 if i % 10 else 429)
                                      for i in range(10_000))
    assert digest.destinations == {("ap-southeast-2", SYD, "bedrock-runtime", "Converse", NOVA, 200): 9000,
                                   ("ap-southeast-2", SYD, "bedrock-runtime", "Converse", NOVA, 429): 1000}


def test_an_empty_log_of_a_cloud_run_is_not_evidence_and_of_a_local_one_is_no_network() -> None:
    cloud = residency_view(RunRecord(run_id="r", backend="nova-pro", family="bedrock"), AuditDigest(), None)
    local = residency_view(RunRecord(run_id="o", backend="ocr-baseline", family="ocr"), [], None)
    assert (cloud["ok"], cloud["summary"]) == (False, "no audit entries recorded for a cloud backend: residency not evidenced")
    assert (local["ok"], local["summary"], local["entries"]) == (True, "no network requests (audit log empty)", 0)


def test_the_catalog_lists_the_models_sent_to_from_a_digest_or_a_list_but_not_the_refused_ones() -> None:
    runs = [RunRecord(run_id="r", backend="nova-pro", family="bedrock", model=None)]
    for audits in ({"r": LOG}, {"r": AuditDigest.from_entries(LOG)}):
        models = {row["model_id"] for row in catalog_rows(runs, audits)}
        assert models == {NOVA}, models
    assert AuditDigest.from_entries(LOG).model_ids() == [NOVA]

"""Accuracy gates: F1 overall, per document type and per field, with hallucination and failure
rates beside them, and (with --baseline) paired non-inferiority against the incumbent run.

Ids read `backend/doc_type/FIELD`; a failure reads
`nova-lite/invoice/GST_AMOUNT: F1 0.91 (95% CI 0.86-0.95) < 0.95 (n=40)`.
"""

from __future__ import annotations

import pytest
from migbench import gates

pytestmark = pytest.mark.migbench


def test_thresholds_fit_the_run(migbench_run, migbench_thresholds):
    """Emulated evidence never passes as real, and dry-run gates never pass a real run."""
    _, run, _ = migbench_run
    th = migbench_thresholds
    if run["emulated"] and not th.dry_run:
        pytest.fail(f"{run['backend']}: run {run['run_id']} is emulated but thresholds {th.name!r} are for real "
                    "runs: use --thresholds dry-run", pytrace=False)
    if th.dry_run and not run["emulated"]:
        pytest.fail(f"{run['backend']}: thresholds {th.name!r} are dry-run gates but run {run['run_id']} is not "
                    "emulated: use the real thresholds", pytrace=False)


def test_every_document_is_stored(migbench_run, migbench_state):
    """The run covers exactly the selected documents: nothing lost, nothing silently skipped."""
    _, run, rows = migbench_run
    missing = sorted(migbench_state.doc_ids - {r["doc_id"] for r in rows})
    assert not missing, f"{run['backend']}: {len(missing)} selected documents not in run {run['run_id']}: {missing[:5]}"


def test_overall_f1(migbench_backend, migbench_run, migbench_thresholds, migbench_check):
    _, _, rows = migbench_run
    migbench_check(gates.overall_gate(migbench_backend, rows, migbench_thresholds))


def test_failure_rate(migbench_backend, migbench_run, migbench_thresholds, migbench_check):
    _, _, rows = migbench_run
    migbench_check(gates.failure_gate(migbench_backend, rows, migbench_thresholds))


def test_hallucination_rate(migbench_backend, migbench_run, migbench_thresholds, migbench_check):
    _, _, rows = migbench_run
    migbench_check(gates.hallucination_gate(migbench_backend, rows, migbench_thresholds))


def test_doc_type_f1(migbench_doc_type, migbench_run, migbench_state, migbench_thresholds, migbench_check):
    _, _, rows = migbench_run
    migbench_check(gates.doc_type_gate(migbench_state.backend, rows, migbench_doc_type, migbench_thresholds))


def test_doc_type_hallucination_rate(migbench_doc_type, migbench_run, migbench_state, migbench_thresholds,
                                     migbench_check):
    _, _, rows = migbench_run
    migbench_check(gates.hallucination_gate(f"{migbench_state.backend}/{migbench_doc_type}", rows,
                                            migbench_thresholds, migbench_doc_type))


def test_field_f1(migbench_field, migbench_run, migbench_state, migbench_thresholds, migbench_schema,
                  migbench_check):
    doc_type, name = migbench_field
    _, _, rows = migbench_run
    critical = gates.critical_fields(migbench_thresholds, migbench_schema)
    migbench_check(gates.field_gate(migbench_state.backend, rows, doc_type, name, migbench_thresholds, critical))


def test_non_inferiority(migbench_doc_type, migbench_run, migbench_baseline, migbench_state, migbench_thresholds,
                         migbench_check):
    """Paired bootstrap of candidate - incumbent document F1 on the same documents."""
    if migbench_baseline is None:
        pytest.skip("no --baseline: pass the incumbent's run id or backend name to compare")
    base_run, base_rows = migbench_baseline
    _, _, rows = migbench_run
    migbench_check(gates.non_inferiority_gate(migbench_state.backend, base_run["backend"], rows, base_rows,
                                              migbench_doc_type, migbench_thresholds))

"""Accuracy gates: F1 overall, per document type and per field, with hallucination and failure
rates beside them, and (with --baseline) paired non-inferiority against the incumbent run.

Ids read `backend/doc_type/FIELD`; a failure reads
`nova-lite/invoice/GST_AMOUNT: F1 0.91 (95% CI 0.86-0.95) < 0.95 (n=40)`.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.migbench


def test_thresholds_fit_the_run(migbench_run, migbench_thresholds):
    """Emulated evidence never passes as real, and dry-run gates never pass a real run."""
    _, run, _ = migbench_run
    th = migbench_thresholds
    if run.emulated and not th.dry_run:
        pytest.fail(f"{run.backend}: run {run.run_id} is emulated but thresholds {th.name!r} are for real "
                    "runs: use --thresholds dry-run", pytrace=False)
    if th.dry_run and not run.emulated:
        pytest.fail(f"{run.backend}: thresholds {th.name!r} are dry-run gates but run {run.run_id} is not "
                    "emulated: use the real thresholds", pytrace=False)


def test_every_document_is_stored(migbench_run, migbench_state):
    """The run covers exactly the selected documents: nothing lost, nothing silently skipped."""
    _, run, rows = migbench_run
    missing = sorted(migbench_state.doc_ids - {r.doc_id for r in rows})
    assert not missing, f"{run.backend}: {len(missing)} selected documents not in run {run.run_id}: {missing[:5]}"


def test_overall_f1(migbench_backend, migbench_check):
    migbench_check("overall_f1", migbench_backend)


def test_failure_rate(migbench_backend, migbench_check):
    migbench_check("failure_rate", migbench_backend)


def test_hallucination_rate(migbench_backend, migbench_check):
    migbench_check("hallucination", migbench_backend)


def test_doc_type_f1(migbench_doc_type, migbench_state, migbench_check):
    migbench_check("doc_type_f1", f"{migbench_state.backend}/{migbench_doc_type}")


def test_doc_type_hallucination_rate(migbench_doc_type, migbench_state, migbench_check):
    migbench_check("hallucination", f"{migbench_state.backend}/{migbench_doc_type}")


def test_field_f1(migbench_field, migbench_state, migbench_check):
    doc_type, name = migbench_field
    migbench_check("field_f1", f"{migbench_state.backend}/{doc_type}/{name}")


def test_non_inferiority(migbench_doc_type, migbench_baseline, migbench_state, migbench_check):
    """Paired bootstrap of candidate - incumbent document F1 on the same documents."""
    if migbench_baseline is None:
        pytest.skip("no --baseline: pass the incumbent's run id or backend name to compare")
    migbench_check("non_inferiority", f"{migbench_state.backend}/{migbench_doc_type}")

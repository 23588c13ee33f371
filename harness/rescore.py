"""Re-parse and re-score a stored run under a scoring profile, without calling any model."""

from __future__ import annotations

from migbench.parsing import parse_output
from migbench.schema import Schema, load_schema
from migbench.scoring import document_f1, score_document
from migbench.store import RunStore


def rescore_run(store: RunStore, run_id: str, profile: str | None = None,
                schema: Schema | None = None) -> tuple[str, int, list[float]]:
    """Score every stored ok document again from its raw response. Returns (profile, n, doc F1s).

    profile None: the profile the run was last scored with, else the default. An imported run whose
    document types were predicted (its config says classified) keeps scoring DOCUMENT_TYPE.
    """
    from migbench.scoring_profiles import profile_for

    schema = schema or load_schema()
    recorded = getattr(store, "scoring", None)
    name, _ = profile_for(profile or (recorded(run_id) if recorded else None))
    run = store.run(run_id)
    check_schema(run.config or {}, schema)
    classified = bool((run.config or {}).get("classified"))
    n, f1s = 0, []
    for d in store.iter_documents(run_id):
        if d.status != "ok":
            continue
        # A classified document was extracted with the prompt of the type it was routed to.
        routed = ((d.response.extra or {}).get("classification") or {}).get("route")
        fields = parse_output(d.response.text or "", routed if routed in schema.document_types else d.doc_type,
                              schema)
        if classified and "DOCUMENT_TYPE" in d.fields:
            fields["DOCUMENT_TYPE"] = d.fields["DOCUMENT_TYPE"]  # the type the source predicted
        scores = score_document(d.ground_truth, fields, schema, name, classified=classified)
        f1 = document_f1(scores)
        store.update_scores(run_id, d.doc_id, fields, scores, f1)
        n += 1
        if f1 is not None:
            f1s.append(f1)
    setter = getattr(store, "set_scoring", None)
    if setter is not None:
        setter(run_id, name)
    return name, n, f1s


def check_schema(config: dict, schema: Schema) -> None:
    """A run scored with a schema given by --schema is rescored with that schema (its sha256 is in the
    run's config): another one would read its documents with other fields and types."""
    from migbench.contracts import UsageError

    used = config.get("schema") or {}
    given = (schema.origin or {}).get("sha256", "")
    if used and not given.startswith(str(used.get("sha256", ""))):
        raise UsageError(f"this run was scored with a --schema file ({used.get('format')}, sha256 "
                         f"{used.get('sha256')}...); rescore it with the same --schema FILE")

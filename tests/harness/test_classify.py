"""The classification stage (--classify): the answer routes the extraction, DOCUMENT_TYPE is scored,
both calls count in the document's figures, fallbacks are recorded, the report gets a confusion matrix."""

import datetime as dt

import pytest
from migbench.classify import (
    FAILED_COLUMN,
    NO_PROMPT,
    UNPARSEABLE,
    UNPARSEABLE_COLUMN,
    confusion_matrix,
    read_classification,
    run_classified,
)
from migbench.contracts import ErrorClass, Request, Response
from migbench.cost import TokenPrice, load_pricing
from migbench.datasets import load_dataset
from migbench.prompting import load_classify_prompt, load_prompt
from migbench.rescore import rescore_run
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.schema import load_schema
from migbench.store import RunStore

from tests.conftest import SYNTH, ScriptedBackend

FAST = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.002)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SYNTH)


@pytest.fixture(scope="module")
def schema():
    return load_schema()


def _answers(ds):
    return {d.doc_id: d.ground_truth for d in ds.documents}


def _truthful(ds):
    return {d.doc_id: d.ground_truth["DOCUMENT_TYPE"] for d in ds.documents}


def _first(ds, doc_type):
    return next(d for d in ds.documents if d.doc_type == doc_type)


def _score(doc, name):
    return next(s for s in doc.scores if s.field == name)


# ------------------------------------------------------------------------ reading an answer
@pytest.mark.parametrize("text,predicted", [
    ("INVOICE", "invoice"),
    ("receipt", "receipt"),
    ("BANK_STATEMENT", "bank_statement"),
    ("**Bank Statement**", "bank_statement"),
    ("This is a tax invoice.", "invoice"),
    ("Credit card statement", "bank_statement"),
    ("RECEIPT (a sales receipt, not an invoice)", "receipt"),  # the earliest name wins
    ("DOCUMENT_TYPE: RECEIPT\nSUPPLIER_NAME: Invoice Kings", "receipt"),  # extraction-shaped answer
    ('{"DOCUMENT_TYPE": "BANK_STATEMENT"}', "bank_statement"),
])
def test_an_answer_naming_a_type_routes_to_it(schema, text, predicted):
    c = read_classification(text, schema)
    assert (c.predicted, c.route, c.fallback) == (predicted, predicted, None)
    assert c.label == schema.document_types[predicted].label


def test_an_answer_naming_a_type_without_a_prompt_falls_back_and_keeps_its_label(schema):
    c = read_classification("TRAVEL_EXPENSE", schema)
    assert (c.predicted, c.route, c.label, c.fallback) == (None, "invoice", "TRAVEL_EXPENSE", NO_PROMPT)


@pytest.mark.parametrize("text", ["", "I cannot tell what this is.", "  ", "42"])
def test_an_unparseable_answer_falls_back_to_invoice_as_the_incumbent(schema, text):
    c = read_classification(text, schema)
    assert (c.predicted, c.route, c.label, c.fallback) == (None, "invoice", "INVOICE", UNPARSEABLE)


def test_the_fallback_type_can_be_chosen(schema):
    assert read_classification("???", schema, fallback="RECEIPT").route == "receipt"


def test_every_family_has_a_classification_question_naming_the_types(schema):
    for family in ("default", "claude", "nova", "internvl", "llama", "qwen", "no-such-family"):
        p = load_classify_prompt(family, schema)
        assert p.max_tokens and p.doc_type == ""
        assert all(spec.label in p.user for spec in schema.document_types.values())
    # a family's own question differs from the default's, so its runs differ
    assert load_classify_prompt("claude").sha256 != load_classify_prompt("default").sha256


def test_a_classify_template_must_name_the_types(tmp_path):
    (tmp_path / "default.yaml").write_text(
        "family: default\nstyles:\n  kv:\n    user: '{kv_template}'\nclassify:\n  user: What is this?\n")
    from migbench.catalog import CatalogError
    from migbench.prompting import _load_file

    _load_file.cache_clear()
    with pytest.raises(CatalogError, match="doc_labels"):
        load_classify_prompt("default", root=tmp_path)
    _load_file.cache_clear()


# ------------------------------------------------------------------------ the runner's stage
def _run(tmp_path, dataset, backend, **opts):
    store = RunStore(tmp_path)
    summary = Runner(backend, dataset, store, RunOptions(retry=FAST, **opts)).run()
    return store, summary, {d.doc_id: d for d in store.documents(summary.run_id)}


def test_correct_classifications_route_each_document_to_its_own_prompt_and_score_document_type(tmp_path, dataset):
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset))
    store, s, docs = _run(tmp_path, dataset, b, classify=True)
    assert (s.ok, s.failed) == (len(dataset), 0)
    asks = [r for r in b.requests if r.doc_type == ""]
    extractions = [r for r in b.requests if r.doc_type != ""]
    assert len(asks) == len(extractions) == len(dataset)
    assert asks[0].prompt == load_classify_prompt("default").user and asks[0].params.max_tokens == 50
    for r in extractions:
        assert r.prompt == load_prompt("default", r.doc_type).user
        assert r.doc_type == next(d.doc_type for d in dataset.documents if d.doc_id == r.doc_id)
    for d in docs.values():
        assert d.doc_f1 == pytest.approx(1.0)
        assert _score(d, "DOCUMENT_TYPE").f1 == 1.0  # counted: the type was predicted
    assert run_classified(store.run(s.run_id))


def test_without_classify_the_type_is_given_and_document_type_is_not_scored(tmp_path, dataset):
    b = ScriptedBackend(_answers(dataset))
    store, s, docs = _run(tmp_path, dataset, b)
    assert all(r.doc_type != "" for r in b.requests) and len(b.requests) == len(dataset)
    assert all("DOCUMENT_TYPE" not in {sc.field for sc in d.scores} for d in docs.values())
    assert not run_classified(store.run(s.run_id))


def test_a_misclassified_document_scores_zero_on_document_type_and_is_extracted_with_the_wrong_prompt(
        tmp_path, dataset):
    stmt = _first(dataset, "bank_statement")
    answers = _truthful(dataset) | {stmt.doc_id: "INVOICE"}
    b = ScriptedBackend(_answers(dataset), classify=answers)
    _, _, docs = _run(tmp_path, dataset, b, classify=True)
    req = next(r for r in b.requests if r.doc_id == stmt.doc_id and r.doc_type)
    assert req.doc_type == "invoice" and req.prompt == load_prompt("default", "invoice").user
    d = docs[stmt.doc_id]
    assert d.doc_type == "bank_statement"  # the record keeps the true type (per-type figures, matrix)
    assert d.fields["DOCUMENT_TYPE"] == "INVOICE"
    assert _score(d, "DOCUMENT_TYPE").f1 == 0.0
    # the invoice prompt never asked for the transactions: read as missing
    assert _score(d, "TRANSACTION_DATES").f1 == 0.0 and _score(d, "TRANSACTION_DATES").missed
    assert d.doc_f1 < 0.5
    assert d.response.extra["classification"]["route"] == "invoice"


def test_an_unparseable_classification_falls_back_recorded(tmp_path, dataset):
    rec = _first(dataset, "receipt")
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset) | {rec.doc_id: "Sorry, I can't see it."})
    _, _, docs = _run(tmp_path, dataset, b, classify=True)
    d = docs[rec.doc_id]
    c = d.response.extra["classification"]
    assert (c["fallback"], c["route"], c["predicted"]) == (UNPARSEABLE, "invoice", None)
    assert c["raw_text"] == "Sorry, I can't see it."
    assert d.fields["DOCUMENT_TYPE"] == "INVOICE" and _score(d, "DOCUMENT_TYPE").f1 == 0.0


def test_a_failed_classification_fails_the_document_with_its_cause_and_no_extraction(tmp_path, dataset):
    doc = dataset.documents[0]
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset),
                        classify_faults={doc.doc_id: [ErrorClass.PERMANENT]})
    _, s, docs = _run(tmp_path, dataset, b, classify=True)
    assert s.failed == 1 and docs[doc.doc_id].error_class == "permanent"
    assert docs[doc.doc_id].error.startswith("classification:")
    assert [r.doc_type for r in b.requests if r.doc_id == doc.doc_id] == [""]


def test_the_classification_retries_through_the_same_loop(tmp_path, dataset):
    doc = dataset.documents[0]
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset),
                        classify_faults={doc.doc_id: [ErrorClass.THROTTLING]})
    _, _, docs = _run(tmp_path, dataset, b, classify=True)
    d = docs[doc.doc_id]
    assert d.status == "ok" and d.response.extra["classification"]["attempts"] == 2
    assert d.response.attempts == 3  # two for the question, one for the extraction
    assert d.response.throttled == 1


def test_both_calls_count_in_the_documents_tokens_latency_and_cost(tmp_path, dataset):
    base = load_pricing()
    price = TokenPrice(region="ap-southeast-2", as_of=dt.date(2026, 1, 1), source="test", verified=False,
                       input_per_1k=1.0, output_per_1k=2.0)
    pricing = base.model_copy(update={"token": {**base.token, "scripted-1": price}})
    store = RunStore(tmp_path)
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset))
    s = Runner(b, dataset, store, RunOptions(retry=FAST, classify=True), pricing=pricing).run()
    for d in store.documents(s.run_id):
        r = d.response
        assert (r.input_tokens, r.output_tokens) == (100 + 10, 20 + 2)
        assert r.cost_usd == pytest.approx(110 / 1000 * 1.0 + 22 / 1000 * 2.0)
        assert r.extra["classification"]["cost_usd"] == pytest.approx(10 / 1000 + 2 / 1000 * 2)
        assert r.latency_s >= 0.25  # the question's scripted 0.25 s is included
        assert r.extra["classification"]["latency_s"] == 0.25


def test_the_run_identity_includes_classification(tmp_path, dataset):
    store = RunStore(tmp_path)
    plain = Runner(ScriptedBackend(), dataset, store, RunOptions()).meta()
    classified = Runner(ScriptedBackend(), dataset, store, RunOptions(classify=True)).meta()
    fallback = Runner(ScriptedBackend(), dataset, store, RunOptions(classify=True, classify_fallback="receipt")).meta()
    assert plain.identity() != classified.identity() != fallback.identity()
    assert classified.config["classified"] is True and "classified" not in plain.config
    # the same options give the same run, so a classified run resumes
    assert Runner(ScriptedBackend(), dataset, store, RunOptions(classify=True)).meta().identity() == \
        classified.identity()


def test_a_classified_run_resumes_without_asking_again(tmp_path, dataset):
    store = RunStore(tmp_path)
    first = Runner(ScriptedBackend(_answers(dataset), classify=_truthful(dataset)), dataset, store,
                   RunOptions(retry=FAST, classify=True, limit=4)).run()
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset))
    second = Runner(b, dataset, store, RunOptions(retry=FAST, classify=True)).run()
    assert second.run_id == first.run_id and second.skipped == 4
    assert len(b.requests) == 2 * (len(dataset) - 4)


def test_an_ocr_backend_cannot_classify(dataset, tmp_path):
    from migbench.contracts import UsageError

    class Ocr(ScriptedBackend):
        family = "ocr"

    with pytest.raises(UsageError, match="--classify"):
        Runner(Ocr(), dataset, RunStore(tmp_path), RunOptions(classify=True))


class BatchedScripted(ScriptedBackend):
    batches = True

    def generate_batch(self, requests: list[Request]) -> list[Response | BaseException]:
        out: list[Response | BaseException] = []
        for r in requests:
            try:
                out.append(self.generate(r))
            except Exception as exc:  # noqa: BLE001 - per request, as a batched adapter reports
                out.append(exc)
        return out


def test_batched_backends_classify_a_batch_then_extract_it(tmp_path, dataset):
    stmt = _first(dataset, "bank_statement")
    doc0 = dataset.documents[0]
    b = BatchedScripted(_answers(dataset), classify=_truthful(dataset) | {stmt.doc_id: "RECEIPT"},
                        classify_faults={doc0.doc_id: [ErrorClass.PERMANENT]})
    _, s, docs = _run(tmp_path, dataset, b, classify=True, batch_size=4)
    assert s.failed == 1 and docs[doc0.doc_id].error.startswith("classification:")
    assert docs[stmt.doc_id].response.extra["classification"]["route"] == "receipt"
    assert _score(docs[stmt.doc_id], "DOCUMENT_TYPE").f1 == 0.0
    ok = [d for d in docs.values() if d.status == "ok" and d.doc_id != stmt.doc_id]
    assert ok and all(d.doc_f1 == pytest.approx(1.0) for d in ok)
    assert all(d.response.input_tokens == 110 for d in ok)


def test_rescoring_a_classified_run_reproduces_its_scores(tmp_path, dataset):
    stmt = _first(dataset, "bank_statement")
    b = ScriptedBackend(_answers(dataset), classify=_truthful(dataset) | {stmt.doc_id: "INVOICE"})
    store, s, before = _run(tmp_path, dataset, b, classify=True)
    rescore_run(store, s.run_id, "incumbent")
    after = {d.doc_id: d for d in store.documents(s.run_id)}
    assert {k: v.doc_f1 for k, v in after.items()} == pytest.approx({k: v.doc_f1 for k, v in before.items()})
    assert after[stmt.doc_id].fields["DOCUMENT_TYPE"] == "INVOICE"


# ------------------------------------------------------------------------ the confusion matrix
def test_the_confusion_matrix_counts_true_by_predicted_types(tmp_path, dataset):
    stmt = _first(dataset, "bank_statement")
    rec = _first(dataset, "receipt")
    inv = _first(dataset, "invoice")
    answers = _truthful(dataset) | {stmt.doc_id: "INVOICE", rec.doc_id: "no idea", inv.doc_id: "TRAVEL_EXPENSE"}
    b = ScriptedBackend(_answers(dataset), classify=answers,
                        classify_faults={dataset.documents[-1].doc_id: [ErrorClass.PERMANENT]})
    store, s, docs = _run(tmp_path, dataset, b, classify=True)
    cm = confusion_matrix(docs.values())
    n = {t: sum(1 for d in dataset.documents if d.doc_type == t) for t in ("invoice", "receipt", "bank_statement")}
    last = dataset.documents[-1]
    assert cm.true_types == ["INVOICE", "RECEIPT", "BANK_STATEMENT"]
    assert cm.predicted_types == ["INVOICE", "RECEIPT", "BANK_STATEMENT", "TRAVEL_EXPENSE", FAILED_COLUMN,
                                  UNPARSEABLE_COLUMN]
    assert cm.total == len(dataset) and sum(map(sum, cm.counts)) == len(dataset)
    assert cm.count("BANK_STATEMENT", "INVOICE") == 1
    assert cm.count("RECEIPT", UNPARSEABLE_COLUMN) == 1
    assert cm.count("INVOICE", "TRAVEL_EXPENSE") == 1
    assert cm.count(last.doc_type.upper(), FAILED_COLUMN) == 1
    assert cm.count("RECEIPT", "RECEIPT") == n["receipt"] - 1 - (last.doc_type == "receipt")
    assert cm.correct == len(dataset) - 4
    assert cm.accuracy == pytest.approx((len(dataset) - 4) / len(dataset))
    assert cm.fallbacks == {NO_PROMPT: 1, UNPARSEABLE: 1}
    from migbench.classify import classification_line

    line = classification_line(store.run(s.run_id), docs.values())
    assert line.startswith(f"document types predicted (--classify): {len(dataset) - 4}/{len(dataset)} right")
    assert "fell back to invoice: 1 no prompt, 1 unparseable" in line
    inv_stats = cm.per_type["INVOICE"]
    assert inv_stats["predicted"] == cm.count("INVOICE", "INVOICE") + 1
    assert inv_stats["precision"] == pytest.approx(cm.count("INVOICE", "INVOICE") / inv_stats["predicted"])
    d = cm.to_dict()
    assert d["accuracy"] == cm.accuracy and d["counts"] == cm.counts


def test_no_confusion_matrix_for_a_run_whose_types_were_given(tmp_path, dataset):
    _, _, docs = _run(tmp_path, dataset, ScriptedBackend(_answers(dataset)))
    # a given type leaves no classification record; DOCUMENT_TYPE from the extraction is not a prediction
    rows = [d for d in docs.values()]
    for r in rows:
        r.fields.pop("DOCUMENT_TYPE", None)
    assert confusion_matrix(rows) is None


def test_an_imported_classified_run_is_tabulated_from_its_predicted_document_type(schema):
    from migbench.contracts import DocResult

    rows = [DocResult("a.png", "invoice", "clean", "ok", Response(), fields={"DOCUMENT_TYPE": "INVOICE"}),
            DocResult("b.png", "receipt", "clean", "ok", Response(), fields={"DOCUMENT_TYPE": "tax invoice"}),
            DocResult("c.png", "receipt", "clean", "failed", Response())]
    cm = confusion_matrix(rows, schema)
    assert cm.count("INVOICE", "INVOICE") == 1 and cm.count("RECEIPT", "INVOICE") == 1
    assert cm.not_classified == 1 and cm.total == 2



def test_cli_classify_on_an_emulated_bedrock_model_asks_then_extracts_through_the_audited_loop(
        tmp_path, monkeypatch, capsys):
    """`migbench run --classify` end to end on the Bedrock adapter: two audited requests per document,
    the question's answer (the emulator renders the document's fields) routes correctly."""
    pytest.importorskip("boto3")
    from migbench.cli import main
    from migbench.emulator import GroundTruthResponder, run_emulator

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ds = load_dataset(SYNTH)
    with run_emulator(responder=GroundTruthResponder(ds)) as emu:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emu.url)
        args = ["run", "--backend", "nova-pro", "--results", str(tmp_path), "--allow-loopback", "--limit", "3"]
        assert main([*args, "--classify"]) == 0
        out = capsys.readouterr()
        classified_id = out.out.strip()
        assert "document types predicted (--classify): 3/3 right (100.0%); DOCUMENT_TYPE scored" in out.err
        assert main(args) == 0
        out = capsys.readouterr()
        plain_id = out.out.strip()
        assert "document types given from the ground truth (not classified): DOCUMENT_TYPE not scored" in out.err
    assert classified_id != plain_id  # classify on/off: two runs
    store = RunStore(tmp_path)
    docs = store.documents(classified_id)
    assert len(docs) == 3 and all(d.status == "ok" for d in docs)
    for d in docs:
        c = d.response.extra["classification"]
        assert c["route"] == d.doc_type and c["fallback"] is None
        assert d.response.input_tokens > c["input_tokens"] > 0
    assert len(store.audit(classified_id)) == 2 * len(store.audit(plain_id)) == 6
    cm = confusion_matrix(docs)
    assert cm.correct == cm.total == 3


def test_cli_classify_with_a_backend_that_reads_no_prompt_is_one_line(tmp_path, capsys):
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR backend needs its extra")
    from migbench.cli import main

    assert main(["run", "--backend", "ocr-baseline", "--classify", "--results", str(tmp_path), "--limit", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--classify: backend ocr-baseline reads no prompt" in err and len(err.splitlines()) == 1


def test_a_classified_run_exported_to_the_incumbents_artifacts_imports_with_the_same_scores(tmp_path, dataset):
    from migbench.lmm_poc import CLASSIFICATIONS, import_run, write_lmm_poc

    stmt, rec, inv = _first(dataset, "bank_statement"), _first(dataset, "receipt"), _first(dataset, "invoice")
    answers = _truthful(dataset) | {stmt.doc_id: "INVOICE", rec.doc_id: "no idea", inv.doc_id: "TRAVEL_EXPENSE"}
    store, s, before = _run(tmp_path / "a", dataset, ScriptedBackend(_answers(dataset), classify=answers),
                            classify=True)
    out = tmp_path / "artifacts"
    write_lmm_poc(store.run(s.run_id), store.documents(s.run_id), out)
    lines = (out / CLASSIFICATIONS).read_text().splitlines()
    assert len(lines) == len(dataset) and '"document_type": "TRAVEL_EXPENSE"' in "".join(lines)
    other = RunStore(tmp_path / "b")
    run_id, _ = import_run(out, "lmm-poc", "round-trip", dataset, other)
    after = {d.doc_id: d for d in other.documents(run_id)}
    assert run_classified(other.run(run_id))
    assert {k: d.doc_f1 for k, d in after.items()} == pytest.approx({k: d.doc_f1 for k, d in before.items()})
    assert after[inv.doc_id].fields["DOCUMENT_TYPE"] == "TRAVEL_EXPENSE"
    assert after[stmt.doc_id].response.extra["classification"]["route"] == "invoice"

"""--schema FILE: the incumbent's config/field_definitions.yaml (types including travel, field lists,
per-type min_tokens) merged with migbench's field types; format told apart by its keys."""

import shutil
from pathlib import Path

import pytest
import yaml
from migbench.cli import main
from migbench.contracts import UsageError
from migbench.datasets import load_dataset
from migbench.options import resolve_schema
from migbench.prompting import load_classify_prompt, load_prompt
from migbench.rescore import rescore_run
from migbench.retry import RetryPolicy
from migbench.runner import Runner, RunOptions
from migbench.schema import load_schema
from migbench.store import RunStore

from tests.conftest import SYNTH, ScriptedBackend

INCUMBENT = Path(__file__).resolve().parents[1] / "data" / "incumbent_field_definitions.yaml"
FAST = RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.002)


@pytest.fixture(scope="module")
def inc():
    return load_schema(INCUMBENT)


def test_the_incumbents_types_and_field_lists_are_read(inc):
    assert list(inc.document_types) == ["invoice", "receipt", "bank_statement", "travel"]  # universal is no type
    assert inc.fields_for("travel") == ["DOCUMENT_TYPE", "PASSENGER_NAME", "TRAVEL_ROUTE", "TRAVEL_DATES",
                                        "SUPPLIER_NAME", "TOTAL_AMOUNT"]
    # a type's own list, not migbench's (a receipt here has 6 fields, not 14)
    assert inc.fields_for("receipt") == ["DOCUMENT_TYPE", "SUPPLIER_NAME", "INVOICE_DATE", "LINE_ITEM_DESCRIPTIONS",
                                         "GST_AMOUNT", "TOTAL_AMOUNT"]
    assert inc.origin["format"] == "incumbent" and len(inc.origin["sha256"]) == 64


def test_known_fields_keep_migbenchs_types_and_unknown_ones_are_text_with_one_warning(inc):
    assert inc.field_type("TOTAL_AMOUNT") == "monetary" and inc.field_type("INVOICE_DATE") == "date"
    assert inc.field_type("TRANSACTION_DATES") == "list" and inc.item_type("TRANSACTION_DATES") == "date"
    assert inc.fields["SUPPLIER_NAME"].aliases  # migbench's aliases carry over
    for name in ("PASSENGER_NAME", "TRAVEL_ROUTE", "TRAVEL_DATES"):
        assert inc.fields[name].type == "text"
    assert inc.fields["PASSENGER_NAME"].description == "Traveller's name as printed on the ticket"
    assert len(inc.warnings) == 1
    assert "3 field(s) have no migbench type and are scored as text: PASSENGER_NAME, TRAVEL_ROUTE, TRAVEL_DATES" \
        in inc.warnings[0]
    lines: list[str] = []
    resolve_schema(INCUMBENT, warn=lines.append)
    assert lines == inc.warnings


def test_min_tokens_is_a_floor_on_the_output_budget(inc):
    base = load_schema()
    # bank_statement: migbench's 2000 raised to the file's 2500; travel (no migbench budget): 1024 -> 1500
    assert inc.document_types["bank_statement"].output_tokens == 2500
    assert inc.document_types["travel"].output_tokens == 1500
    # no min_tokens: migbench's own budget
    assert inc.document_types["invoice"].output_tokens == base.document_types["invoice"].max_tokens


def test_critical_fields_and_validation_only_fields_follow_the_file(inc, tmp_path):
    assert inc.critical_fields == ["SUPPLIER_NAME", "TOTAL_AMOUNT"]  # names not in the schema dropped
    raw = yaml.safe_load(INCUMBENT.read_text())
    raw["document_fields"]["bank_statement"]["fields"].append("ACCOUNT_BALANCE")
    p = tmp_path / "fd.yaml"
    p.write_text(yaml.safe_dump(raw))
    s = load_schema(p)
    assert not s.is_scored("ACCOUNT_BALANCE") and s.is_scored("TRANSACTION_DATES")


def test_travel_labels_and_aliases_map_to_the_travel_type(inc):
    assert inc.document_types["travel"].label == "TRAVEL_EXPENSE"  # the snake-case alias, as its classifier answers
    for label in ("TRAVEL", "travel expense", "TRAVEL_EXPENSE", "Boarding pass"):
        assert inc.doc_type_from_label(label) == "travel"
    assert inc.doc_type_from_label("statement") == "bank_statement"


def test_a_type_without_notes_gets_the_default_prompt_built_from_its_fields(inc):
    p = load_prompt("nova", "travel", "kv", inc)
    for name in inc.fields_for("travel"):
        assert f"{name}: [value or NOT_FOUND]" in p.user
    assert "Traveller's name as printed on the ticket" in p.user
    assert "TRAVEL" in load_classify_prompt("default", inc).user


def test_a_migbench_schema_file_still_loads(tmp_path):
    from migbench.ground_truth import schema_path

    copy = tmp_path / "fields.yaml"
    shutil.copy(schema_path(), copy)
    s = load_schema(copy)
    assert s.origin["format"] == "migbench" and list(s.document_types) == list(load_schema().document_types)


@pytest.mark.parametrize("text", ["just: a mapping\n", "- a\n- list\n", "version: 1\nfields: {}\n"])
def test_a_file_in_neither_format_is_one_clear_error(tmp_path, text):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(UsageError, match="not a field schema: expected migbench's .* or the incumbent's"):
        load_schema(p)


@pytest.mark.parametrize("edit,match", [
    (lambda r: r["document_fields"]["travel"].update(min_tokens=0), "min_tokens must be a whole number"),
    (lambda r: r["document_fields"]["travel"].update(fields=[]), "lists no fields"),
    (lambda r: r.update(document_fields={"universal": {"fields": ["DOCUMENT_TYPE"]}}), "names no document type"),
    (lambda r: r["document_fields"]["travel"].update(fields="PASSENGER_NAME"), "must be a list of names"),
])
def test_a_malformed_incumbent_file_is_one_clear_error(tmp_path, edit, match):
    raw = yaml.safe_load(INCUMBENT.read_text())
    edit(raw)
    p = tmp_path / "fd.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match=match):
        load_schema(p)


def test_a_missing_schema_file_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="--schema .*: file not found"):
        resolve_schema(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------ runs under the schema
@pytest.fixture
def travel_set(tmp_path):
    """Two documents: a travel ticket (a type only the incumbent's schema has) and a receipt."""
    root = tmp_path / "set"
    root.mkdir()
    shutil.copy(SYNTH / "synth_0000_invoice_clean.png", root / "ticket.png")
    shutil.copy(SYNTH / "synth_0001_receipt_clean.png", root / "receipt.png")
    (root / "ground_truth.csv").write_text(
        "image_file,DOCUMENT_TYPE,PASSENGER_NAME,TRAVEL_ROUTE,SUPPLIER_NAME,TOTAL_AMOUNT\n"
        "ticket.png,TRAVEL_EXPENSE,NGUYEN/AN,Sydney to Melbourne,Jetstar,$189.00\n"
        "receipt.png,RECEIPT,,,Coastal Bean,$14.50\n")
    return root


def test_a_travel_dataset_runs_under_the_incumbents_schema(tmp_path, travel_set, inc):
    ds = load_dataset(travel_set, schema=inc)
    assert {d.doc_id: d.doc_type for d in ds.documents} == {"ticket.png": "travel", "receipt.png": "receipt"}
    answers = {d.doc_id: d.ground_truth for d in ds.documents}
    answers["ticket.png"] = answers["ticket.png"] | {"TRAVEL_ROUTE": "Sydney to Melbourne (return)"}
    b = ScriptedBackend(answers, classify={"ticket.png": "TRAVEL_EXPENSE", "receipt.png": "RECEIPT"})
    store = RunStore(tmp_path / "results")
    s = Runner(b, ds, store, RunOptions(retry=FAST, classify=True), schema=inc).run()
    assert (s.ok, s.failed) == (2, 0)
    ticket = next(r for r in b.requests if r.doc_id == "ticket.png" and r.doc_type)
    assert ticket.doc_type == "travel" and ticket.params.max_tokens == 1500  # the file's floor
    assert ticket.prompt == load_prompt("default", "travel", "kv", inc).user
    docs = {d.doc_id: d for d in store.documents(s.run_id)}
    route = next(x for x in docs["ticket.png"].scores if x.field == "TRAVEL_ROUTE")
    assert 0.5 <= route.f1 < 1.0  # scored as text (ANLS partial credit), as the warning said
    assert next(x for x in docs["ticket.png"].scores if x.field == "DOCUMENT_TYPE").f1 == 1.0
    config = store.run(s.run_id).config
    assert config["schema"]["format"] == "incumbent" and config["classified"] is True


def test_the_schema_is_part_of_the_run_identity(tmp_path):
    ds = load_dataset(SYNTH)
    store = RunStore(tmp_path)
    plain = Runner(ScriptedBackend(), ds, store, RunOptions()).meta()
    other = Runner(ScriptedBackend(), ds, store, RunOptions(), schema=load_schema(INCUMBENT)).meta()
    assert plain.identity() != other.identity()


def test_rescore_with_schema_rescores_a_run_made_with_it_and_refuses_without(tmp_path, travel_set, inc, capsys):
    ds = load_dataset(travel_set, schema=inc)
    b = ScriptedBackend({d.doc_id: d.ground_truth for d in ds.documents})
    results = tmp_path / "results"
    store = RunStore(results)
    s = Runner(b, ds, store, RunOptions(retry=FAST), schema=inc).run()
    before = {d.doc_id: d.doc_f1 for d in store.documents(s.run_id)}
    assert before == {"ticket.png": pytest.approx(1.0), "receipt.png": pytest.approx(1.0)}
    # without the schema the travel document's fields would be unknown: refused, nothing changed
    assert main(["rescore", s.run_id, "--results", str(results), "--scoring", "exact"]) == 2
    assert "rescore it with the same --schema FILE" in capsys.readouterr().err
    assert main(["rescore", s.run_id, "--results", str(results), "--scoring", "exact",
                 "--schema", str(INCUMBENT)]) == 0
    err = capsys.readouterr().err
    assert "rescored 2 documents" in err and "scored as text" in err
    after = {d.doc_id: d.doc_f1 for d in RunStore(results).documents(s.run_id)}
    assert after == before
    with pytest.raises(UsageError):
        rescore_run(RunStore(results), s.run_id, "incumbent", load_schema())

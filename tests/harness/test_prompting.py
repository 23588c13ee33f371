import re
import shutil

import pytest
from migbench.catalog import CatalogError
from migbench.prompting import Prompt, load_prompt, prompt_hash, prompts_dir
from migbench.schema import FieldSpec, load_schema

SCHEMA = load_schema()
FAMILIES = ["default", "nova", "claude", "llama", "internvl", "qwen"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("style", ["kv", "json"])
@pytest.mark.parametrize("doc_type", ["invoice", "receipt", "bank_statement"])
def test_every_family_style_and_doc_type_names_all_its_fields(family, style, doc_type):
    p = load_prompt(family, doc_type, style)
    assert isinstance(p, Prompt)
    assert (p.family, p.doc_type, p.style) == (family, doc_type, style)
    for f in SCHEMA.fields_for(doc_type):
        assert f in p.user
    others = set(SCHEMA.fields) - set(SCHEMA.fields_for(doc_type))
    assert not any(f"\n{f}:" in p.user for f in others)
    assert "NOT_FOUND" in p.user
    assert not re.search(r"\{[a-z_]+\}", p.user + (p.system or ""))  # placeholders all filled


def test_kv_prompt_asks_for_the_incumbent_format():
    p = load_prompt("default", "invoice", "kv")
    assert "TOTAL_AMOUNT: [value or NOT_FOUND]" in p.user
    assert '" | "' in p.user and "DD/MM/YYYY" in p.user and "$" in p.user


def test_system_prompt_only_where_the_family_uses_one():
    assert load_prompt("nova", "receipt").system
    assert load_prompt("claude", "receipt").system
    assert load_prompt("llama", "receipt").system is None
    assert load_prompt("default", "receipt").system is None


def test_unknown_family_falls_back_to_default():
    p = load_prompt("some-new-model", "receipt", "json")
    assert p.family == "default"
    assert p.user == load_prompt("default", "receipt", "json").user
    assert load_prompt("../../etc/passwd", "receipt").family == "default"


def test_unknown_doc_type_or_style_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown document type 'passport'"):
        load_prompt("nova", "passport")
    with pytest.raises(ValueError, match="unknown prompt style 'xml'"):
        load_prompt("nova", "invoice", "xml")


def test_hash_is_stable_and_tracks_content():
    h = prompt_hash("nova", "invoice", "kv")
    assert h == load_prompt("nova", "invoice", "kv").sha256 and len(h) == 64
    assert h != prompt_hash("nova", "invoice", "json")
    assert h != prompt_hash("claude", "invoice", "kv")


def test_new_schema_field_reaches_the_prompt():
    data = SCHEMA.model_dump()
    data["fields"]["DUE_DATE"] = FieldSpec(type="date", description="Payment due date").model_dump()
    data["document_types"]["invoice"]["fields"].append("DUE_DATE")
    schema = type(SCHEMA).model_validate(data)
    p = load_prompt("nova", "invoice", "json", schema=schema)
    assert '"DUE_DATE"' in p.user and "Payment due date" in p.user
    assert "DUE_DATE" not in load_prompt("nova", "invoice", "json").user


def _write_family(tmp_path, text, name="bad"):
    shutil.copy(prompts_dir() / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / f"{name}.yaml").write_text(text)


def test_unknown_placeholder_fails_at_load(tmp_path):
    _write_family(tmp_path, "family: bad\nstyles:\n  kv:\n    user: 'Fields {field_list} {colour}'\n")
    with pytest.raises(CatalogError, match="colour"):
        load_prompt("bad", "invoice", root=tmp_path)


def test_template_without_the_field_list_fails_at_load(tmp_path):
    _write_family(tmp_path, "family: bad\nstyles:\n  kv:\n    user: 'Extract everything.'\n")
    with pytest.raises(CatalogError, match="must contain"):
        load_prompt("bad", "invoice", root=tmp_path)


def test_extends_cycle_and_missing_parent_fail_clearly(tmp_path):
    _write_family(tmp_path, "family: a\nextends: b\n", name="a")
    (tmp_path / "b.yaml").write_text("family: b\nextends: a\n")
    with pytest.raises(CatalogError, match="cycle"):
        load_prompt("a", "invoice", root=tmp_path)
    (tmp_path / "c.yaml").write_text("family: c\nextends: nowhere\n")
    with pytest.raises(CatalogError, match="not found"):
        load_prompt("c", "invoice", root=tmp_path)


def test_family_override_inherits_missing_styles(tmp_path):
    _write_family(tmp_path, "family: mine\nextends: default\nstyles:\n  kv:\n    user: 'Only {field_names}'\n",
                  name="mine")
    p = load_prompt("mine", "receipt", "kv", root=tmp_path)
    assert p.user.startswith("Only DOCUMENT_TYPE, BUSINESS_ABN")
    assert load_prompt("mine", "receipt", "json", root=tmp_path).user == load_prompt("default", "receipt", "json").user

import pytest
from migbench.catalog import CatalogError, load_model
from pydantic import BaseModel


class Thing(BaseModel):
    name: str
    price: float


def test_a_valid_file_loads(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: nova\nprice: 0.0008\n")
    assert load_model(Thing, p).price == 0.0008


@pytest.mark.parametrize("text,match", [("name: nova\nprice: cheap\n", "price"), ("name: [unclosed\n", "not valid YAML")])
def test_a_bad_file_names_the_file_and_the_problem(tmp_path, text, match):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(CatalogError, match=match) as exc:
        load_model(Thing, p)
    assert "t.yaml" in str(exc.value)


def test_a_missing_file_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError, match="file not found"):
        load_model(Thing, tmp_path / "nope.yaml")


def test_a_caller_that_edits_a_cached_catalog_changes_nothing_for_later_callers():
    from migbench.cost import load_pricing
    from migbench.residency import load_policy

    first = load_pricing()
    first.token.clear()  # nested containers are the caller's own copy
    first.hourly["ml.g5.2xlarge"] = None
    again = load_pricing()
    assert "amazon.nova-pro-v1:0" in again.token and again.hourly["ml.g5.2xlarge"].per_hour == 1.52
    policy = load_policy()
    before = policy.model_dump()
    for value in vars(policy).values():
        if isinstance(value, (list, dict, set)):
            value.clear()
    assert load_policy().model_dump() == before
    assert load_pricing() is not load_pricing()

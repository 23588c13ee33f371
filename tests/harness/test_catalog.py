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

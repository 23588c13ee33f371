"""The field schema (ground_truth/fields.yaml): names, types, critical fields per document type."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from migbench.catalog import load_model, read_yaml
from migbench.contracts import NOT_FOUND, UsageError
from migbench.ground_truth import schema_path
from pydantic import BaseModel, PrivateAttr, model_validator

FieldType = Literal["monetary", "date", "boolean", "list", "id", "text"]


def _key(name: str) -> str:
    """'total due' / 'Total-Due' -> 'TOTAL_DUE': the form parsing compares model keys in."""
    return "_".join(name.replace("-", " ").replace("_", " ").upper().split())


class FieldSpec(BaseModel):
    type: FieldType
    item_type: FieldType | None = None
    description: str = ""
    scored: bool = True  # False: the field is given to the backend (routing), so never scored
    aliases: list[str] = []

    @model_validator(mode="after")
    def _list_has_item_type(self) -> FieldSpec:
        if self.type == "list" and self.item_type in (None, "list"):
            raise ValueError("list fields need an item_type that is not list")
        return self


class DocTypeSpec(BaseModel):
    label: str
    fields: list[str]
    max_tokens: int = 1024
    # The incumbent's per-type floor on output tokens (its field_definitions.yaml `min_tokens`: "bank
    # statements have many transactions; need more output tokens"); the request asks for the larger.
    min_tokens: int | None = None
    description: str = ""  # what the type covers, for the classification prompt
    aliases: list[str] = []  # other names a classifier or a ground-truth row may use for the type

    @property
    def output_tokens(self) -> int:
        """max_tokens for an extraction request: the type's budget, never below its floor."""
        return max(self.max_tokens, self.min_tokens or 0)


class Schema(BaseModel):
    version: int
    list_separator: str = " | "
    # Stated, not chosen: parser, scorer and the incumbent's ground truth all use contracts.NOT_FOUND.
    not_found: Literal[NOT_FOUND] = NOT_FOUND  # type: ignore[valid-type]
    fields: dict[str, FieldSpec]
    document_types: dict[str, DocTypeSpec]
    critical_fields: list[str]
    # alias -> field, built on first use and kept with this schema object (parsing asks per output)
    _alias_map: Mapping[str, str] | None = PrivateAttr(default=None)
    # Where a schema given with --schema came from (format, path, sha256); None for the packaged one.
    _origin: dict[str, str] | None = PrivateAttr(default=None)
    # One line each, for the user: what loading had to assume (e.g. fields scored as text).
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _names_known(self) -> Schema:
        for dt, spec in self.document_types.items():
            unknown = [f for f in spec.fields if f not in self.fields]
            if unknown:
                raise ValueError(f"document type {dt} names unknown fields {unknown}")
        unknown = [f for f in self.critical_fields if f not in self.fields]
        if unknown:
            raise ValueError(f"critical_fields names unknown fields {unknown}")
        seen: dict[str, str] = {}
        for name, spec in self.fields.items():
            for a in spec.aliases:
                if a in self.fields or seen.setdefault(a, name) != name:
                    raise ValueError(f"alias {a} of {name} is a field name or another field's alias")
        return self

    def field_type(self, name: str) -> FieldType:
        return self.fields[name].type if name in self.fields else "text"

    def item_type(self, name: str) -> FieldType:
        spec = self.fields.get(name)
        return (spec.item_type or "text") if spec else "text"

    def aliases(self) -> Mapping[str, str]:
        """alias -> field name, over every field (an alias naming two fields is a schema error).

        Computed once per schema object; read-only so one caller cannot change another's view."""
        if self._alias_map is None:
            self._alias_map = MappingProxyType(
                {_key(a): name for name, spec in self.fields.items() for a in spec.aliases})
        return self._alias_map

    def is_scored(self, name: str) -> bool:
        spec = self.fields.get(name)
        return spec.scored if spec else True

    def fields_for(self, doc_type: str) -> list[str]:
        return list(self.document_types[doc_type].fields)

    @property
    def origin(self) -> dict[str, str] | None:
        return self._origin

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    def doc_type_from_label(self, label: str) -> str | None:
        """Map 'RECEIPT', 'Bank Statement', 'tax invoice' ... to a schema key."""
        norm = "_".join(label.strip().lower().replace("-", " ").split())
        for key, spec in self.document_types.items():
            if norm in (key, spec.label.lower()):
                return key
        for key, spec in self.document_types.items():
            if norm in {"_".join(a.lower().replace("-", " ").split()) for a in spec.aliases}:
                return key
        for key in self.document_types:
            if key in norm or norm.endswith(key.split("_")[-1]):
                return key
        return None


def load_schema(path: str | Path | None = None) -> Schema:
    """The packaged schema, or the file given: migbench's own format (version, fields,
    document_types) or the incumbent's config/field_definitions.yaml (document_fields), told apart
    by their keys (migbench.incumbent_schema merges the latter with the packaged field types)."""
    if not path:
        return load_model(Schema, schema_path())
    raw = read_yaml(path)
    if isinstance(raw, dict) and "document_fields" in raw:
        from migbench.incumbent_schema import schema_from_incumbent

        schema = schema_from_incumbent(raw, load_model(Schema, schema_path()), str(path))
        fmt = "incumbent"
    elif isinstance(raw, dict) and {"version", "fields", "document_types"} <= raw.keys():
        schema = load_model(Schema, path)
        fmt = "migbench"
    else:
        raise UsageError(f"{path}: not a field schema: expected migbench's (keys version, fields, "
                         f"document_types) or the incumbent's field_definitions.yaml (key document_fields)")
    schema._origin = {"format": fmt, "path": str(path),
                      "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return schema

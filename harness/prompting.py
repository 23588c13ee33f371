"""Prompts per model family and document type, built from YAML templates and the field schema.

prompts/<family>.yaml holds templates for the `kv` (FIELD: value lines, the incumbent's format)
and `json` styles. The field list, the answer skeleton and the descriptions come from
ground_truth/fields.yaml, so adding a field there reaches every prompt. A family file may
`extends:` another and override only some styles or notes. Files are validated at load: an
unknown placeholder or a template that does not list the fields fails with the file and style.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from migbench.catalog import CatalogError, load_model
from migbench.schema import Schema, load_schema
from pydantic import BaseModel, ConfigDict, field_validator

Style = Literal["kv", "json"]
STYLES: tuple[str, ...] = ("kv", "json")
DEFAULT_FAMILY = "default"
PLACEHOLDERS = frozenset({"doc_label", "doc_type", "field_list", "field_names", "kv_template",
                          "json_template", "not_found", "list_separator", "notes"})
# a template must name the fields somehow, or the schema would not reach the prompt
FIELD_PLACEHOLDERS = frozenset({"field_list", "field_names", "kv_template", "json_template"})
_FAMILY_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"bad braces in template ({exc}); write literal braces as {{{{ }}}}") from None


class StyleTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    user: str

    @field_validator("system", "user")
    @classmethod
    def _known_placeholders(cls, v: str | None) -> str | None:
        if v is None:
            return v
        names = _placeholders(v)
        unknown = sorted(n for n in names if n not in PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholders {unknown}; allowed: {sorted(PLACEHOLDERS)}")
        return v

    @field_validator("user")
    @classmethod
    def _names_fields(cls, v: str) -> str:
        if not _placeholders(v) & FIELD_PLACEHOLDERS:
            raise ValueError(f"user template must contain one of {sorted(FIELD_PLACEHOLDERS)}")
        return v


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    extends: str | None = None
    description: str = ""
    styles: dict[Style, StyleTemplate] = {}
    notes: dict[str, str] = {}


@dataclass(frozen=True)
class Prompt:
    system: str | None
    user: str
    style: str
    family: str  # the family whose templates were used (default when the asked one has none)
    doc_type: str

    @property
    def sha256(self) -> str:
        """Hash of what the model sees (system, user, style): identical prompts, identical hash."""
        blob = json.dumps([self.system, self.user, self.style], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompts_dir() -> Path:
    return Path(str(resources.files("migbench.prompts")))


@lru_cache(maxsize=64)
def _load_file(path: Path) -> PromptFile:
    return load_model(PromptFile, path)


def _resolve(family: str, root: Path) -> tuple[str, dict[str, StyleTemplate], dict[str, str]]:
    """Merged styles and notes of a family along its extends chain; unknown family -> default."""
    name = family.strip().lower()
    if not _FAMILY_NAME.match(name) or not (root / f"{name}.yaml").is_file():
        name = DEFAULT_FAMILY
    chain: list[PromptFile] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise CatalogError(f"{root}: prompt families extend each other in a cycle: {sorted(seen)}")
        seen.add(current)
        path = root / f"{current}.yaml"
        if not path.is_file():
            raise CatalogError(f"{path}: prompt family file not found (named by extends)")
        pf = _load_file(path)
        chain.append(pf)
        current = pf.extends
    styles: dict[str, StyleTemplate] = {}
    notes: dict[str, str] = {}
    for pf in reversed(chain):  # base first, then overrides
        styles.update(pf.styles)
        notes.update(pf.notes)
    return name, styles, notes


def _fill(schema: Schema, doc_type: str, notes: str) -> dict[str, str]:
    fields = schema.fields_for(doc_type)
    nf, sep = schema.not_found, schema.list_separator
    skeleton = ",\n".join(
        f'  "{f}": ["..."]' if schema.fields[f].type == "list" else f'  "{f}": "..."' for f in fields
    )
    return {
        "doc_label": schema.document_types[doc_type].label.replace("_", " ").lower(),
        "doc_type": doc_type,
        "field_list": "\n".join(f"- {f}: {schema.fields[f].description or f}" for f in fields),
        "field_names": ", ".join(fields),
        "kv_template": "\n".join(f"{f}: [value or {nf}]" for f in fields),
        "json_template": "{\n" + skeleton + "\n}",
        "not_found": nf,
        "list_separator": sep,
        "notes": notes,
    }


def load_prompt(family: str, doc_type: str, style: str = "kv", schema: Schema | None = None,
                root: str | Path | None = None) -> Prompt:
    """The prompt for a model family, document type and style ('kv' or 'json').

    An unknown family falls back to the default templates; an unknown doc_type or style is a
    ValueError naming the known ones. root overrides the packaged prompts/ directory.
    """
    schema = schema or load_schema()
    if doc_type not in schema.document_types:
        raise ValueError(f"unknown document type {doc_type!r}; known: {sorted(schema.document_types)}")
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {list(STYLES)}")
    base = Path(root) if root is not None else prompts_dir()
    name, styles, notes = _resolve(str(family or ""), base)
    if style not in styles:
        raise ValueError(f"prompt family {name!r} has no {style!r} style; it has {sorted(styles)}")
    tmpl = styles[style]
    values = _fill(schema, doc_type, notes.get(doc_type, ""))
    user = tmpl.user.format(**values).strip()
    system = tmpl.system.format(**values).strip() if tmpl.system else None
    return Prompt(system=system or None, user=user, style=style, family=name, doc_type=doc_type)


def prompt_hash(family: str, doc_type: str, style: str = "kv", schema: Schema | None = None,
                root: str | Path | None = None) -> str:
    """sha256 of the prompt a run would send (for the run store)."""
    return load_prompt(family, doc_type, style, schema, root).sha256

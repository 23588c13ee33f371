"""Prompts per model family and document type, built from YAML templates and the field schema.

prompts/<family>.yaml holds templates for the `kv` (FIELD: value lines, the incumbent's format),
`json` and `tool` styles. `tool` is structured output: the same instructions without the answer
format, and a tool (`Prompt.tool`) whose JSON Schema is generated from the field schema; the model
answers by calling it, so its input is the answer. The field list, the answer skeleton and the descriptions come from
ground_truth/fields.yaml, so adding a field there reaches every prompt. A family file may
`extends:` another and override only some styles or notes. Files are validated at load: an
unknown placeholder or a template that does not list the fields fails with the file and style.

A family's `classify` entry is the question asked first when a run classifies (--classify): which
of the schema's document types is this? Its answer routes the document to that type's prompt.
Every document type of the schema gets a prompt: a type no file has notes for (e.g. one from the
incumbent's field_definitions.yaml) is built from its field list like any other.
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
from migbench.contracts import ToolSpec
from migbench.schema import Schema, load_schema
from pydantic import BaseModel, ConfigDict, Field, field_validator

Style = Literal["kv", "json", "tool"]
STYLES: tuple[str, ...] = ("kv", "json", "tool")
TOOL_STYLE = "tool"
DEFAULT_FAMILY = "default"
PLACEHOLDERS = frozenset({"doc_label", "doc_type", "field_list", "field_names", "kv_template",
                          "json_template", "not_found", "list_separator", "notes", "tool_name"})
# a template must name the fields somehow, or the schema would not reach the prompt
FIELD_PLACEHOLDERS = frozenset({"field_list", "field_names", "kv_template", "json_template"})
# the classification question names the schema's document types (labels, or labels with descriptions)
CLASSIFY_PLACEHOLDERS = frozenset({"doc_labels", "doc_type_list"})
CLASSIFY_DOC_TYPE = ""  # the doc_type of a classification request and Prompt: it names no type yet
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


class ClassifyTemplate(BaseModel):
    """The classification question: names the document types, asks for one label back."""

    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    user: str
    max_tokens: int = Field(64, ge=1, le=4096)  # a label, not an extraction

    @field_validator("system", "user")
    @classmethod
    def _known_placeholders(cls, v: str | None) -> str | None:
        if v is None:
            return v
        unknown = sorted(n for n in _placeholders(v) if n not in CLASSIFY_PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholders {unknown}; allowed: {sorted(CLASSIFY_PLACEHOLDERS)}")
        return v

    @field_validator("user")
    @classmethod
    def _names_types(cls, v: str) -> str:
        if not _placeholders(v) & CLASSIFY_PLACEHOLDERS:
            raise ValueError(f"classify user template must contain one of {sorted(CLASSIFY_PLACEHOLDERS)}")
        return v


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    extends: str | None = None
    description: str = ""
    styles: dict[Style, StyleTemplate] = {}
    notes: dict[str, str] = {}
    classify: ClassifyTemplate | None = None


@dataclass(frozen=True)
class Prompt:
    system: str | None
    user: str
    style: str
    family: str  # the family whose templates were used (default when the asked one has none)
    doc_type: str  # CLASSIFY_DOC_TYPE for the classification question
    max_tokens: int | None = None  # set for the classification question (its own small budget)
    tool: ToolSpec | None = None  # style "tool": the tool the model must call with the fields

    @property
    def sha256(self) -> str:
        """Hash of what the model sees (system, user, style, tool): identical prompts, identical hash."""
        parts: list[object] = [self.system, self.user, self.style]
        if self.max_tokens is not None:  # the classification budget changes what comes back
            parts.append(self.max_tokens)
        if self.tool is not None:  # the tool's schema is part of the request the model reads
            parts.append([self.tool.name, self.tool.description, self.tool.input_schema])
        blob = json.dumps(parts, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompts_dir() -> Path:
    return Path(str(resources.files("migbench.prompts")))


@lru_cache(maxsize=64)
def _load_file(path: Path) -> PromptFile:
    return load_model(PromptFile, path)


def _resolve(family: str, root: Path) -> tuple[str, dict[str, StyleTemplate], dict[str, str]]:
    """Merged styles and notes of a family along its extends chain; unknown family -> default."""
    name, chain = _chain(family, root)
    styles: dict[str, StyleTemplate] = {}
    notes: dict[str, str] = {}
    for pf in reversed(chain):  # base first, then overrides
        styles.update(pf.styles)
        notes.update(pf.notes)
    return name, styles, notes


def _chain(family: str, root: Path) -> tuple[str, list[PromptFile]]:
    """The family's file and the files it extends, nearest first; unknown family -> default."""
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
    return name, chain


_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def tool_name(doc_type: str) -> str:
    """The tool's name for a document type; Bedrock's ToolSpecification allows [a-zA-Z0-9_-]{1,64}."""
    return ("record_" + _TOOL_NAME.sub("_", doc_type).strip("_"))[:64]


def tool_input_schema(schema: Schema, doc_type: str) -> dict[str, object]:
    """JSON Schema of the tool's input: every field of the type, as strings; a list field as an array
    of strings (one element per line item). All are required, so an absent value is said, not skipped."""
    nf = schema.not_found
    props: dict[str, object] = {}
    for f in schema.fields_for(doc_type):
        spec = schema.fields[f]
        desc = spec.description or f
        if spec.type == "list":
            props[f] = {"type": "array", "items": {"type": "string"},
                        "description": f"{desc}: one element per line item, in document order; [] when none"}
        else:
            props[f] = {"type": "string", "description": f"{desc}; {nf} when not shown"}
    return {"type": "object", "properties": props, "required": schema.fields_for(doc_type),
            "additionalProperties": False}


def tool_spec(schema: Schema, doc_type: str) -> ToolSpec:
    label = schema.document_types[doc_type].label.replace("_", " ").lower()
    return ToolSpec(name=tool_name(doc_type), description=f"Record the fields read from one {label}.",
                    input_schema=tool_input_schema(schema, doc_type))


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
        "tool_name": tool_name(doc_type),
    }


def load_prompt(family: str, doc_type: str, style: str = "kv", schema: Schema | None = None,
                root: str | Path | None = None) -> Prompt:
    """The prompt for a model family, document type and style ('kv', 'json' or 'tool').

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
    tool = tool_spec(schema, doc_type) if style == TOOL_STYLE else None
    return Prompt(system=system or None, user=user, style=style, family=name, doc_type=doc_type, tool=tool)


def _type_values(schema: Schema) -> dict[str, str]:
    labels = [spec.label for spec in schema.document_types.values()]
    joined = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]
    return {
        "doc_labels": joined,
        "doc_type_list": "\n".join(f"- {spec.label}" + (f" ({spec.description})" if spec.description else "")
                                   for spec in schema.document_types.values()),
    }


def load_classify_prompt(family: str, schema: Schema | None = None, root: str | Path | None = None) -> Prompt:
    """The classification question of a model family (the nearest `classify` along its extends
    chain), naming the schema's document types. A family chain without one is a ValueError."""
    schema = schema or load_schema()
    base = Path(root) if root is not None else prompts_dir()
    name, chain = _chain(str(family or ""), base)
    tmpl = next((pf.classify for pf in chain if pf.classify is not None), None)
    if tmpl is None:
        raise ValueError(f"prompt family {name!r} has no classify entry (nor does any family it extends)")
    values = _type_values(schema)
    user = tmpl.user.format(**values).strip()
    system = tmpl.system.format(**values).strip() if tmpl.system else None
    return Prompt(system=system or None, user=user, style="classify", family=name, doc_type=CLASSIFY_DOC_TYPE,
                  max_tokens=tmpl.max_tokens)


def prompt_hash(family: str, doc_type: str, style: str = "kv", schema: Schema | None = None,
                root: str | Path | None = None) -> str:
    """sha256 of the prompt a run would send (for the run store)."""
    return load_prompt(family, doc_type, style, schema, root).sha256

"""The incumbent's field schema (tmnestor/LMM_POC `config/field_definitions.yaml`) as a migbench Schema.

The incumbent's file names its document types and their field lists (`document_fields`, with an
optional per-type `min_tokens`), describes each field (`field_descriptions`), lists fields that are
extracted but never evaluated (`field_usage.validation_only`), its critical fields
(`evaluation.critical_fields`) and other names for each type (`document_type_aliases`). It says
nothing migbench's comparators can use about how to compare a field beyond coarse groups, so every
field keeps migbench's own type, item type and aliases (ground_truth/fields.yaml); a field migbench
has no type for is scored as text, and loading says so in one warning line.

A type migbench does not know is labelled as the incumbent's classifier names it: the snake-case
name among its `document_type_aliases` (travel -> TRAVEL_EXPENSE), else its key upper-cased.

`universal` is left out: in the incumbent it is the union of every field, the prompt it falls back
to when a type has no prompt, not a kind of document a classifier can answer.
"""

from __future__ import annotations

from typing import Any

from migbench.contracts import UsageError
from migbench.schema import DocTypeSpec, FieldSpec, Schema
from pydantic import ValidationError

NOT_A_DOCUMENT_TYPE = frozenset({"universal"})


def _names(value: Any, where: str, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UsageError(f"{path}: {where} must be a list of names")
    return [v.strip() for v in value]


def _mapping(value: Any, where: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: {where} must be a mapping")
    return value


def _label(key: str, aliases: list[str]) -> str:
    """The label a new type is answered and written with: the incumbent's classifier answers with the
    snake-case name among its aliases (travel -> TRAVEL_EXPENSE, logbook -> VEHICLE_LOGBOOK), else the key."""
    snake = [a for a in aliases if "_" in a and " " not in a.strip()]
    return (snake[0] if snake else key).strip().upper()


def schema_from_incumbent(raw: dict[str, Any], base: Schema, path: str = "field_definitions.yaml") -> Schema:
    """A Schema with the incumbent's types and field lists, migbench's field types and comparators.

    raw: the parsed YAML; base: the packaged schema whose field types and per-type settings
    (label, max_tokens, description, aliases) carry over for the types and fields it knows.
    """
    doc_fields = _mapping(raw.get("document_fields"), "document_fields", path)
    descriptions = {str(k): str(v) for k, v in _mapping(raw.get("field_descriptions"), "field_descriptions",
                                                        path).items()}
    usage = _mapping(raw.get("field_usage"), "field_usage", path)
    validation_only = set(_names(usage.get("validation_only"), "field_usage.validation_only", path))
    evaluation = _mapping(raw.get("evaluation"), "evaluation", path)
    type_aliases = _mapping(raw.get("document_type_aliases"), "document_type_aliases", path)

    document_types: dict[str, DocTypeSpec] = {}
    for key, spec in doc_fields.items():
        key = str(key).strip().lower()
        if key in NOT_A_DOCUMENT_TYPE:
            continue
        spec = _mapping(spec, f"document_fields.{key}", path)
        fields = _names(spec.get("fields"), f"document_fields.{key}.fields", path)
        if not fields:
            raise UsageError(f"{path}: document_fields.{key} lists no fields")
        min_tokens = spec.get("min_tokens")
        if min_tokens is not None and (isinstance(min_tokens, bool) or not isinstance(min_tokens, int)
                                       or min_tokens < 1):
            raise UsageError(f"{path}: document_fields.{key}.min_tokens must be a whole number of at least 1")
        known = base.document_types.get(key)
        aliases = _names(type_aliases.get(key), f"document_type_aliases.{key}", path)
        document_types[key] = DocTypeSpec(
            label=known.label if known else _label(key, aliases),
            fields=list(dict.fromkeys(fields)),  # a name listed twice is one field
            max_tokens=known.max_tokens if known else DocTypeSpec.model_fields["max_tokens"].default,
            min_tokens=min_tokens,
            description=known.description if known else "",
            aliases=list(dict.fromkeys([*(known.aliases if known else []), *aliases])),
        )
    if not document_types:
        raise UsageError(f"{path}: document_fields names no document type")

    fields: dict[str, FieldSpec] = {}
    untyped: list[str] = []
    for dt in document_types.values():
        for name in dt.fields:
            if name in fields:
                continue
            if name in base.fields:
                spec = base.fields[name].model_copy(deep=True)
                if not spec.description and name in descriptions:
                    spec.description = descriptions[name]
            else:
                untyped.append(name)
                spec = FieldSpec(type="text", description=descriptions.get(name, ""))
            if name in validation_only:
                spec.scored = False  # the incumbent extracts it for arithmetic checks, never scores it
            fields[name] = spec
    # An alias of a known field that is itself a field of this schema would make parsing ambiguous.
    for spec in fields.values():
        spec.aliases = [a for a in spec.aliases if a not in fields]

    critical = [f for f in _names(evaluation.get("critical_fields"), "evaluation.critical_fields", path)
                if f in fields] or [f for f in base.critical_fields if f in fields]
    try:
        schema = Schema(version=base.version, list_separator=base.list_separator, fields=fields,
                        document_types=document_types, critical_fields=critical)
    except ValidationError as exc:
        raise UsageError(f"{path}: {exc.errors()[0]['msg']}") from None
    if untyped:
        schema._warnings.append(
            f"{path}: {len(untyped)} field(s) have no migbench type and are scored as text: {', '.join(untyped)}")
    return schema

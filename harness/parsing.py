"""Model output -> fields. `parse_output` never raises and returns every field of the doc type.

Reads what vision-language models actually print:
- `KEY: value` lines (markdown bold keys, bullets, numbered lines, any key case, spaces for
  underscores), values continued on the following lines when the key line is empty, bullet items
  under a list field;
- JSON objects, bare, in ```json fences or after a preamble, nested one level (`{"fields": {...}}`),
  arrays of line-item objects, and truncated JSON (cut back to the last complete pair);
- markdown tables `| FIELD | value |`.
Both the JSON and the line readings are tried; the one that finds more fields wins and the other
fills the gaps. Work is linear in the input: no backtracking regex, bounded JSON attempts.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Mapping

from migbench.contracts import NOT_FOUND
from migbench.normalize import is_not_found, parse_amount, parse_date
from migbench.schema import Schema, load_schema

LIST_SEP = " | "

# Short names models use instead of the schema's (fields.yaml `aliases`); applied only when
# the target is wanted.
ALIASES = load_schema().aliases()

# Keys of line-item / transaction objects in JSON arrays -> the list field they feed.
ROW_KEYS = {
    "DESCRIPTION": "LINE_ITEM_DESCRIPTIONS",
    "ITEM": "LINE_ITEM_DESCRIPTIONS",
    "NAME": "LINE_ITEM_DESCRIPTIONS",
    "QUANTITY": "LINE_ITEM_QUANTITIES",
    "QTY": "LINE_ITEM_QUANTITIES",
    "PRICE": "LINE_ITEM_PRICES",
    "UNIT_PRICE": "LINE_ITEM_PRICES",
    "TOTAL": "LINE_ITEM_TOTAL_PRICES",
    "TOTAL_PRICE": "LINE_ITEM_TOTAL_PRICES",
    "LINE_TOTAL": "LINE_ITEM_TOTAL_PRICES",
    "DATE": "TRANSACTION_DATES",
    "TRANSACTION_DATE": "TRANSACTION_DATES",
    "AMOUNT": "TRANSACTION_AMOUNTS_PAID",
    "AMOUNT_PAID": "TRANSACTION_AMOUNTS_PAID",
    "DEBIT": "TRANSACTION_AMOUNTS_PAID",
}

_MAX_KEY_LEN = 80
_MAX_JSON_TRIES = 20
_REPAIR_CUTS = 64
_MAX_DEPTH = 64
_BULLET = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+")
_KEY_JUNK = re.compile(r"[*`\"'#>\[\]]")
_WS = re.compile(r"\s+")
_LIST_COMMA = re.compile(r",\s+")
_SEMI = re.compile(r";")
_COMMA = re.compile(r",")


# ---------------------------------------------------------------------------------------------
# keys and values
# ---------------------------------------------------------------------------------------------

def canonical_key(raw: str) -> str:
    """'**Business abn**' / 'business-abn' / '"BUSINESS_ABN"' -> 'BUSINESS_ABN'."""
    s = _KEY_JUNK.sub("", raw).replace("-", " ").replace("_", " ")
    return "_".join(s.upper().split())


def _field_for(raw_key: str, wanted: Iterable[str]) -> str | None:
    if len(raw_key) > _MAX_KEY_LEN:
        return None
    key = canonical_key(raw_key)
    if key in wanted:
        return key
    alias = ALIASES.get(key)
    return alias if alias in wanted else None


def clean_value(value: str) -> str:
    """Strip markdown emphasis, wrapping quotes (and a comma after them), extra whitespace; idempotent."""
    v = _WS.sub(" ", value).strip()
    while True:
        prev = v
        v = v.strip(" *`_")
        # '"value",' is a JSON-ish line; a bare trailing comma may be part of the value (addresses)
        quoted = v.rstrip(",").rstrip()
        if len(quoted) >= 2 and quoted[0] == quoted[-1] and quoted[0] in "\"'":
            v = quoted[1:-1].strip()
        if v == prev:
            return v


def _json_scalar(v: object) -> str:
    if v is None:
        return NOT_FOUND
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        items = [_json_scalar(x) for x in v if x is not None]
        return LIST_SEP.join(i for i in items if i) or NOT_FOUND
    return json.dumps(v, ensure_ascii=False)


def _split_items(value: str, item_type: str) -> list[str]:
    """A list field's raw text -> items. Commas split only numbers/dates, never descriptions."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        try:
            arr = json.loads(v)
        except ValueError:
            arr = None
        if isinstance(arr, list):
            return [_json_scalar(x) for x in arr]
        v = v[1:-1]
    if "|" in v:
        return v.split("|")
    if "\n" in v:
        return [_BULLET.sub("", line.strip()) for line in v.splitlines()]
    if item_type in ("monetary", "date"):
        # '$1,234.00, $5.00': a thousands comma has no space after it, a list comma does
        seps = (_LIST_COMMA, _SEMI) if item_type == "monetary" else (_SEMI, _COMMA)
        readable = parse_amount if item_type == "monetary" else parse_date
        for sep in seps:
            parts = [p for p in sep.split(v) if p.strip()]
            if len(parts) > 1 and all(readable(p) is not None for p in parts):
                return parts
    return [v]


def _finish(name: str, raw: str | None, schema: Schema) -> str:
    if raw is None:
        return NOT_FOUND
    if schema.field_type(name) == "list":
        items = [clean_value(i) for i in _split_items(raw, schema.item_type(name))]
        items = [NOT_FOUND if is_not_found(i) else i for i in items if i]
        if not items or all(i == NOT_FOUND for i in items):
            return NOT_FOUND
        return LIST_SEP.join(items)
    v = clean_value(raw)
    if is_not_found(v):
        return NOT_FOUND
    if name == "DOCUMENT_TYPE":
        key = schema.doc_type_from_label(v)
        return schema.document_types[key].label if key else "_".join(v.upper().split())
    return v


# ---------------------------------------------------------------------------------------------
# KEY: value lines and markdown tables
# ---------------------------------------------------------------------------------------------

def _table_cells(line: str) -> tuple[str, str] | None:
    inner = line[1:]
    inner = inner.removesuffix("|")
    key, sep, rest = inner.partition("|")
    if not sep:
        return None
    return key, rest.strip()


def parse_lines(text: str, wanted: Iterable[str], list_fields: Iterable[str] = ()) -> dict[str, str]:
    """Raw values from `KEY: value` lines and `| KEY | value |` rows; the last mention wins."""
    wanted = frozenset(wanted)
    list_fields = frozenset(list_fields)
    out: dict[str, str] = {}
    current: str | None = None
    parts: list[str] = []
    open_ended = False  # key line had no value: following lines are the value

    def flush() -> None:
        if current is not None:
            sep = "\n" if current in list_fields else " "
            out[current] = sep.join(p for p in parts if p)

    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("```"):
            if line or parts:
                flush()
                current = None
            continue
        if line.startswith("|"):
            flush()
            current = None
            cells = _table_cells(line)
            if cells:
                field = _field_for(cells[0], wanted)
                if field:
                    out[field] = cells[1]
            continue
        is_bullet = _BULLET.match(line) is not None
        body = _BULLET.sub("", line, count=1)
        key, sep, rest = body.partition(":")
        field = _field_for(key, wanted) if sep else None
        if field:
            flush()
            current, parts = field, [rest.strip()]
            open_ended = not clean_value(rest)
            continue
        if current is not None and (open_ended or (is_bullet and current in list_fields)):
            parts.append(body)
        else:
            flush()
            current = None
    flush()
    return out


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_CLOSERS = {"{": "}", "[": "]"}
_JSON_SPECIAL = re.compile(r'["\\{}\[\],]')


def repair_json(s: str) -> object | None:
    """Parse a truncated JSON object: cut back to the last complete element and close brackets."""
    stack: list[str] = []
    in_str = False
    escaped_at = -1  # position of the character a backslash escapes
    cuts: deque[tuple[int, str]] = deque(maxlen=_REPAIR_CUTS)
    for m in _JSON_SPECIAL.finditer(s):
        c = m.group(0)
        pos = m.start()
        if in_str:
            if pos == escaped_at:
                continue  # an escaped quote or backslash is text
            if c == "\\":
                escaped_at = pos + 1
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            stack.append(c)
            if len(stack) > _MAX_DEPTH:
                return None  # no extraction answer nests this deep; refuse rather than recurse
            cuts.append((pos + 1, "".join(_CLOSERS[b] for b in reversed(stack))))
        elif c in "}]":
            if stack:
                stack.pop()
            if not stack:
                break  # complete object: nothing to repair
        elif c == "," and stack:
            cuts.append((pos, "".join(_CLOSERS[b] for b in reversed(stack))))
    candidates = []
    if not in_str and stack:
        candidates.append(s.rstrip().rstrip(",") + "".join(_CLOSERS[b] for b in reversed(stack)))
    candidates.extend(s[:pos] + closers for pos, closers in reversed(cuts))
    for cand in candidates:
        try:
            return json.loads(cand)
        except (ValueError, RecursionError):
            continue
    return None


def _fence_blocks(text: str) -> list[str]:
    blocks = []
    start = text.find("```")
    while start != -1:
        body_start = text.find("\n", start)
        body_start = start + 3 if body_start == -1 else body_start + 1
        end = text.find("```", body_start)
        blocks.append(text[body_start:] if end == -1 else text[body_start:end])
        if end == -1:
            break
        start = text.find("```", end + 3)
    return blocks


def find_json_object(text: str) -> dict | None:
    """The first JSON object in fences or in the text; truncated objects repaired."""
    for chunk in [*_fence_blocks(text), text]:
        i = chunk.find("{")
        first_failed: int | None = None
        tries = 0
        while i != -1 and tries < _MAX_JSON_TRIES:
            tries += 1
            try:
                obj, _ = _DECODER.raw_decode(chunk, i)
            except (ValueError, RecursionError):
                if first_failed is None:
                    first_failed = i
            else:
                if isinstance(obj, dict) and obj:
                    return obj
            i = chunk.find("{", i + 1)
        if first_failed is not None:
            obj = repair_json(chunk[first_failed:])
            if isinstance(obj, dict) and obj:
                return obj
    return None


def _rows_to_lists(rows: list, wanted: frozenset[str], out: dict[str, str]) -> None:
    cols: dict[str, list[str]] = {}
    for row in rows:
        if not isinstance(row, dict):
            return
        for k, v in row.items():
            target = ROW_KEYS.get(canonical_key(str(k)))
            if target in wanted:
                cols.setdefault(target, []).append(_json_scalar(v))
    for target, values in cols.items():
        out.setdefault(target, LIST_SEP.join(values))


def flatten_json(obj: Mapping, wanted: Iterable[str], depth: int = 0) -> dict[str, str]:
    """Known fields of a JSON object, looking one or two levels into nested objects."""
    wanted = frozenset(wanted)
    out: dict[str, str] = {}
    nested: list[Mapping] = []
    for k, v in obj.items():
        field = _field_for(str(k), wanted)
        if field and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            out.setdefault(field, _json_scalar(v))
        elif isinstance(v, dict):
            nested.append(v)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            _rows_to_lists(v, wanted, out)
    if depth < 2:
        for sub in nested:
            for f, val in flatten_json(sub, wanted, depth + 1).items():
                out.setdefault(f, val)
    return out


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------

def _as_text(text: object) -> str:
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return text if isinstance(text, str) else str(text)


def _strip_reasoning(text: str) -> str:
    """Reasoning models wrap their thinking in <think>...</think>; the answer follows it."""
    cut = text.rfind("</think>")
    return text[cut + len("</think>"):] if cut != -1 else text


def parse_fields_any(text: str, wanted: Iterable[str], list_fields: Iterable[str] = ()) -> dict[str, str]:
    """Raw (uncleaned) values of the wanted fields from JSON, lines or tables, best reading first."""
    wanted = frozenset(wanted)
    text = _strip_reasoning(_as_text(text))
    obj = find_json_object(text) if "{" in text else None
    from_json = flatten_json(obj, wanted) if obj else {}
    from_lines = parse_lines(text, wanted, list_fields)
    first, second = (from_json, from_lines) if len(from_json) >= len(from_lines) else (from_lines, from_json)
    merged = dict(first)
    for k, v in second.items():
        merged.setdefault(k, v)
    return merged


def _fields_of(doc_type: str, schema: Schema) -> list[str]:
    if doc_type in schema.document_types:
        return schema.fields_for(doc_type)
    key = schema.doc_type_from_label(str(doc_type)) if doc_type else None
    # an unknown doc type still gets every schema field rather than an exception
    return schema.fields_for(key) if key else list(schema.fields)


def parse_output(text: str, doc_type: str, schema: Schema | None = None) -> dict[str, str]:
    """Every field of the doc type, NOT_FOUND where the output has no usable value. Never raises."""
    schema = schema or load_schema()
    fields = _fields_of(doc_type, schema)
    try:
        lists = [f for f in fields if schema.field_type(f) == "list"]
        raw = parse_fields_any(text, fields, lists)
    except (RecursionError, MemoryError, ValueError, TypeError):  # pragma: no cover - defensive
        raw = {}
    out: dict[str, str] = {}
    for f in fields:
        try:
            out[f] = _finish(f, raw.get(f), schema)
        except (RecursionError, ValueError, TypeError):  # pragma: no cover - defensive
            out[f] = NOT_FOUND
    return out


# ---------------------------------------------------------------------------------------------
# renderers (tests, the emulator's responder, the suites)
# ---------------------------------------------------------------------------------------------

def _one_line(v: object) -> str:
    return NOT_FOUND if v is None else " ".join(str(v).split()) or NOT_FOUND


def render_kv(fields: Mapping[str, object]) -> str:
    """The incumbent's format: one `FIELD: value` line per field."""
    return "\n".join(f"{k}: {_one_line(v)}" for k, v in fields.items())


def render_json(fields: Mapping[str, object], list_fields: Iterable[str] = (),
                not_found_as_null: bool = False, indent: int | None = 2) -> str:
    """JSON object; fields named in list_fields become arrays, NOT_FOUND optionally null."""
    list_fields = frozenset(list_fields)
    obj: dict[str, object] = {}
    for k, v in fields.items():
        s = _one_line(v)
        if s == NOT_FOUND and not_found_as_null:
            obj[k] = None
        elif k in list_fields and s != NOT_FOUND:
            obj[k] = [i.strip() for i in s.split("|")]
        else:
            obj[k] = s
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def render_markdown_table(fields: Mapping[str, object]) -> str:
    rows = ["| FIELD | VALUE |", "|---|---|"]
    rows += [f"| {k} | {_one_line(v)} |" for k, v in fields.items()]
    return "\n".join(rows)

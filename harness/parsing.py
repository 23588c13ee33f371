"""Model output -> fields. `parse_output` never raises and returns every field of the doc type.

Reads what vision-language models actually print:
- `KEY: value` lines (markdown bold keys, bullets, numbered lines, any key case, spaces for
  underscores), values continued on the following lines when the key line is empty, bullet items
  under a list field;
- JSON objects, bare, in ```json fences or after a preamble, nested one level (`{"fields": {...}}`),
  arrays of line-item objects, and truncated JSON (cut back to the last complete pair);
- markdown tables `| FIELD | value |`.
Both the JSON and the line readings are tried; the one that finds more fields wins and the other
fills the gaps.

Work is linear in the input whatever its shape (bench/parser_worst_case.py measures ms per MB for
the worst shapes found): every scan moves forward, regexes cannot backtrack, JSON is attempted a
bounded number of times with a bounded amount of text re-read, and long C-level calls stay short,
so Ctrl-C is never held up for long. Aliases come from the schema passed in, not from the default.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping

from migbench.contracts import NOT_FOUND, Response
from migbench.normalize import is_not_found, parse_amount, parse_date
from migbench.schema import Schema, load_schema

LIST_SEP = " | "
NO_ALIASES: Mapping[str, str] = {}

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
_MAX_JSON_TRIES = 20  # raw_decode starts per chunk
_MAX_FENCES = 16  # fenced blocks tried for JSON before the whole text
_REPAIR_CUTS = 64
_MAX_REPAIR_PARSES = 8  # json.loads of repair candidates per repair
_MAX_DEPTH = 64
_SEP_PROBE = 64  # list items checked to decide how a one-line list value is separated
# A list longer than this is a runaway answer (a model repeating itself until max_tokens), never a
# document's line items; the first ones are kept and the rest not parsed (the raw text keeps them).
MAX_LIST_ITEMS = 2000
_BULLET = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+")
_WS = re.compile(r"\s+")
_LIST_COMMA = re.compile(r",\s+")
_SEMI = re.compile(r";")
_COMMA = re.compile(r",")


# ---------------------------------------------------------------------------------------------
# keys and values
# ---------------------------------------------------------------------------------------------

_KEY_TABLE = str.maketrans({**dict.fromkeys("*`\"'#>[]"), "-": " ", "_": " "})


def canonical_key(raw: str) -> str:
    """'**Business abn**' / 'business-abn' / '"BUSINESS_ABN"' -> 'BUSINESS_ABN'."""
    return "_".join(raw.translate(_KEY_TABLE).upper().split())


def _field_for(raw_key: str, wanted: frozenset[str], aliases: Mapping[str, str]) -> str | None:
    """The wanted field a model's key names, directly or through one of the schema's aliases."""
    if len(raw_key) > _MAX_KEY_LEN:
        return None
    key = canonical_key(raw_key)
    if key in wanted:
        return key
    alias = aliases.get(key)
    return alias if alias in wanted else None


_EDGE = re.compile(r"[ *`_]*")
_COMMAS = re.compile(r",*")
_SPACES = re.compile(r"\s*")
_LEFT_LAYER = frozenset(" *`_\"'")  # a peel needs one of these first (a quote pair starts with one)
_RIGHT_LAYER = frozenset(" *`_")
_QUOTE_RUN = {'"': re.compile('"*'), "'": re.compile("'*")}


def clean_value(value: str) -> str:
    """Strip markdown emphasis, wrapping quotes (and a comma after them), extra whitespace; idempotent.

    Peels layers like `**"value"**,` from both ends by moving two indices inward; the right end is
    scanned on the reversed string so every step is a forward, non-backtracking regex match. One
    pass per layer would copy the string each time: quadratic on 1 MB of quotes.
    """
    v = _WS.sub(" ", value).strip()
    if not v or (v[0] not in _LEFT_LAYER and v[-1] not in _RIGHT_LAYER):
        return v  # nothing to peel: most values
    n = len(v)
    r = v[::-1]  # position p from the right end in v is n - p in r
    i, j = 0, n
    # Each regex runs only when the next character says it has work: layers like '"*"*"*' are
    # peeled one round per layer, so a round must cost a few operations, not a dozen calls.
    while True:
        pi, pj = i, j
        # (a single layer character, the common case, is stepped over without a regex call)
        if i < j and v[i] in _RIGHT_LAYER:
            i = i + 1 if i + 1 == j or v[i + 1] not in _RIGHT_LAYER else _EDGE.match(v, i, j).end()
        if j > i and v[j - 1] in _RIGHT_LAYER:
            j = j - 1 if j - 1 == i or v[j - 2] not in _RIGHT_LAYER else n - _EDGE.match(r, n - j, n - i).end()
        # '"value",' is a JSON-ish line; a bare trailing comma may be part of the value (addresses)
        k = j
        if k > i and v[k - 1] == ",":
            k = k - 1 if k - 1 == i or v[k - 2] != "," else n - _COMMAS.match(r, n - k, n - i).end()
        if k > i and v[k - 1] == " ":
            k = n - _SPACES.match(r, n - k, n - i).end()
        q = v[i] if k - i >= 2 else ""
        if q in ('"', "'") and v[k - 1] == q:
            m = _quote_pairs(q, v, r, i, k)
            i, j = i + m, k - m
            if i < j and v[i] == " ":
                i += 1
            if j > i and v[j - 1] == " ":
                j -= 1
        if (i, j) == (pi, pj):
            return v[i:j]


def _quote_pairs(q: str, v: str, r: str, i: int, k: int) -> int:
    """How many pairs of q wrap v[i:k] (both ends start with q). Runs are measured in growing
    steps, so a 1 MB run facing a 1-quote run costs a few characters, not 1 MB per pair."""
    most = (k - i) // 2
    if most == 1 or v[i + 1] != q or v[k - 2] != q:
        return 1
    run, n, cap = _QUOTE_RUN[q], len(v), 8
    while True:
        lim = min(cap, most)
        m = min(run.match(v, i, i + lim).end() - i, run.match(r, n - k, n - k + lim).end() - (n - k))
        if m < lim or lim == most:
            return m
        cap *= 4


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
    """A list field's raw text -> items (at most MAX_LIST_ITEMS). Commas split only numbers/dates,
    never descriptions."""
    return _split_all(value, item_type)[:MAX_LIST_ITEMS]


def _split_all(value: str, item_type: str) -> list[str]:
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        try:
            arr = json.loads(v)
        except ValueError:
            arr = None
        if isinstance(arr, list):
            return [_json_scalar(x) for x in arr[:MAX_LIST_ITEMS]]
        v = v[1:-1]
    if "|" in v:
        return v.split("|", MAX_LIST_ITEMS)
    if "\n" in v:
        return [_BULLET.sub("", line.strip()) for line in v.splitlines()[:MAX_LIST_ITEMS]]
    if item_type in ("monetary", "date"):
        # '$1,234.00, $5.00': a thousands comma has no space after it, a list comma does
        seps = (_LIST_COMMA, _SEMI) if item_type == "monetary" else (_SEMI, _COMMA)
        readable = parse_amount if item_type == "monetary" else parse_date
        for sep in seps:
            parts = [p for p in sep.split(v) if p.strip()]
            # the first items decide: checking all of a 100,000-item line costs seconds
            if len(parts) > 1 and all(readable(p) is not None for p in parts[:_SEP_PROBE]):
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


def parse_lines(text: str, wanted: Iterable[str], list_fields: Iterable[str] = (),
                aliases: Mapping[str, str] = NO_ALIASES) -> dict[str, str]:
    """Raw values from `KEY: value` lines and `| KEY | value |` rows; the last mention wins."""
    wanted = frozenset(wanted)
    list_fields = frozenset(list_fields)
    out: dict[str, str] = {}
    current: str | None = None
    parts: list[str] = []
    # Runaway answers repeat the same keys; a key's field is worked out once per call.
    memo: dict[str, str | None] = {}

    def field_for(raw_key: str) -> str | None:
        if raw_key in memo:
            return memo[raw_key]
        found = _field_for(raw_key, wanted, aliases)
        if len(memo) < 10_000:
            memo[raw_key] = found
        return found

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
                field = field_for(cells[0])
                if field:
                    out[field] = cells[1]
            continue
        bullet = _BULLET.match(line)
        is_bullet = bullet is not None
        body = line[bullet.end():] if bullet else line
        key, sep, rest = body.partition(":")
        field = field_for(key) if sep else None
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
# One token per match: a whole string (closed or cut off; the unrolled form cannot backtrack),
# or one structural character. Strings are consumed in C, so the Python loop runs per token.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[{}\[\],]', re.DOTALL)


def repair_json(s: str) -> object | None:
    """Parse a truncated JSON object: cut back to the last complete element and close brackets.

    One forward pass records where the text could be cut (after an opening bracket, before a
    comma) with the closers needed there. Candidates are tried longest first; when one fails at
    position p, every longer candidate shares the broken prefix, so those are skipped. At most
    _MAX_REPAIR_PARSES candidates are parsed, so the work is a small multiple of the input.
    """
    closers = ""  # closers for the open brackets, innermost first; immutable, so cuts share it
    depth = 0
    in_str = False  # the text ends inside a string
    cuts: deque[tuple[int, str]] = deque(maxlen=_REPAIR_CUTS)
    for m in _JSON_TOKEN.finditer(s):
        tok = m.group(0)
        c = tok[0]
        if c == '"':
            # an escaped quote is consumed with its backslash, so a final quote always closes
            in_str = len(tok) < 2 or tok[-1] != '"'
            if in_str:
                break
        elif c in "{[":
            depth += 1
            if depth > _MAX_DEPTH:
                return None  # no extraction answer nests this deep; refuse rather than recurse
            closers = _CLOSERS[c] + closers
            cuts.append((m.end(), closers))
        elif c in "}]":
            if depth:
                depth -= 1
                closers = closers[1:]
            if not depth:
                break  # complete object: nothing to repair
        elif depth:  # a comma inside brackets
            cuts.append((m.start(), closers))
    candidates: list[tuple[int, str]] = []
    if not in_str and depth:
        body = s.rstrip().rstrip(",")
        candidates.append((len(body), body + closers))
    candidates.extend((pos, "") for pos, _ in reversed(cuts))
    closers_at = dict(cuts)
    bad_from = len(s)  # a candidate reaching past a known error fails there too
    parses = 0
    for pos, whole in candidates:
        if pos > bad_from + 1:
            continue
        if parses >= _MAX_REPAIR_PARSES:
            break
        parses += 1
        cand = whole or s[:pos] + closers_at[pos]
        try:
            return json.loads(cand)
        except json.JSONDecodeError as exc:
            if exc.pos < pos - 1:  # inside the kept text, not at its cut edge
                bad_from = min(bad_from, exc.pos)
        except (ValueError, RecursionError):
            continue
    return None


def _fence_blocks(text: str) -> list[str]:
    """The bodies of ``` fences, at most _MAX_FENCES. Each search starts where the last ended
    (the newline after an opening fence is found once and reused), so the scan is linear."""
    blocks: list[str] = []
    newline = -2  # the first newline at or after `start`; -1 when there is none
    start = text.find("```")
    while start != -1 and len(blocks) < _MAX_FENCES:
        if newline != -1 and newline < start:
            newline = text.find("\n", start)
        body_start = start + 3 if newline == -1 else newline + 1
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


def flatten_json(obj: Mapping, wanted: Iterable[str], depth: int = 0,
                 aliases: Mapping[str, str] = NO_ALIASES) -> dict[str, str]:
    """Known fields of a JSON object, looking one or two levels into nested objects."""
    wanted = frozenset(wanted)
    out: dict[str, str] = {}
    nested: list[Mapping] = []
    for k, v in obj.items():
        field = _field_for(str(k), wanted, aliases)
        if field and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            out.setdefault(field, _json_scalar(v))
        elif isinstance(v, dict):
            nested.append(v)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            _rows_to_lists(v, wanted, out)
    if depth < 2:
        for sub in nested:
            for f, val in flatten_json(sub, wanted, depth + 1, aliases).items():
                out.setdefault(f, val)
    return out


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def _as_text(text: object) -> str:
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return without_surrogates(text if isinstance(text, str) else str(text))


def without_surrogates(text: str) -> str:
    """Replace lone surrogates (JSON's "\\ud800" decodes to one) with U+FFFD: they cannot be
    encoded as UTF-8, so they would crash a print, a file write or a SQLite insert later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _strip_reasoning(text: str) -> str:
    """Reasoning models wrap their thinking in <think>...</think>; the answer follows it."""
    cut = text.rfind("</think>")
    return text[cut + len("</think>"):] if cut != -1 else text


def parse_fields_any(text: str, wanted: Iterable[str], list_fields: Iterable[str] = (),
                     aliases: Mapping[str, str] = NO_ALIASES) -> dict[str, str]:
    """Raw (uncleaned) values of the wanted fields from JSON, lines or tables, best reading first."""
    wanted = frozenset(wanted)
    text = _strip_reasoning(_as_text(text))
    obj = find_json_object(text) if "{" in text else None
    from_json = flatten_json(obj, wanted, aliases=aliases) if obj else {}
    from_lines = parse_lines(text, wanted, list_fields, aliases)
    first, second = (from_json, from_lines) if len(from_json) >= len(from_lines) else (from_lines, from_json)
    merged = dict(first)
    for k, v in second.items():
        merged.setdefault(k, v)
    return merged


# ---------------------------------------------------------------------------------------------
# the stored raw text
# ---------------------------------------------------------------------------------------------

MAX_RAW_CHARS_ENV = "MIGBENCH_MAX_RAW_CHARS"
DEFAULT_MAX_RAW_CHARS = 1_000_000  # ~250k tokens: far beyond any max_tokens, so only junk is cut


def max_raw_chars(value: int | str | None = None) -> int | None:
    """The raw-text cap: `value` if given, else $MIGBENCH_MAX_RAW_CHARS, else the default.
    0 (or 'none') means no cap. Read when asked, never at import."""
    raw = value if value is not None else os.environ.get(MAX_RAW_CHARS_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_RAW_CHARS
    if isinstance(raw, str) and raw.strip().lower() in ("none", "off"):
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_RAW_CHARS_ENV} must be a whole number of characters (0 = no cap), "
                         f"got {raw!r}") from None
    if n < 0:
        raise ValueError(f"the raw-text cap must be 0 (no cap) or more characters, got {n}")
    return n or None


def cap_raw_text(resp: Response, limit: int | None = DEFAULT_MAX_RAW_CHARS) -> bool:
    """Cut `resp.text` to `limit` characters before it is parsed and stored, recording the cut in
    `resp.extra` (`raw_text_truncated`: true, `raw_text_chars`: the original length), so a report
    can say the stored text is partial and a rescore reads the same text the run parsed.
    Returns True when it cut. Lone surrogates are replaced too: SQLite cannot store them."""
    text = resp.text if isinstance(resp.text, str) else _as_text(resp.text)
    text = without_surrogates(text)
    cut = limit is not None and len(text) > limit
    if cut:
        resp.extra["raw_text_truncated"] = True
        resp.extra["raw_text_chars"] = len(text)
        text = text[:limit]
    resp.text = text
    return cut


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
        raw = parse_fields_any(text, fields, lists, schema.aliases())
    except (RecursionError, MemoryError, ValueError, TypeError):  # pragma: no cover - defensive
        raw = {}
    out: dict[str, str] = {}
    for f in fields:
        try:
            out[f] = without_surrogates(_finish(f, raw.get(f), schema))
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

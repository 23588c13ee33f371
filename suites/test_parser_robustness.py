"""Parser robustness: hypothesis properties over the parser and normaliser (never raises, every
supported output format round-trips, normalisation is idempotent), and the backend's own stored
raw outputs re-parsed: no value visible as `FIELD: value` may come out NOT_FOUND.

Hypothesis runs derandomized so a CI gate gives the same verdict on the same code.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migbench.contracts import NOT_FOUND
from migbench.normalize import is_not_found
from migbench.parsing import (
    canonical_key,
    clean_value,
    parse_output,
    render_json,
    render_kv,
    render_markdown_table,
)
from migbench.schema import load_schema

pytestmark = pytest.mark.migbench
SCHEMA = load_schema()
DOC_TYPES = sorted(SCHEMA.document_types)
PROPS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])?\s*([^:\n]{1,80}):(.*)$")


# strategies ------------------------------------------------------------------------------------
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&'-", min_size=2,
               max_size=10).filter(lambda w: w[0].isalnum() and w[-1].isalnum() and not is_not_found(w))
TEXT = st.lists(WORD, min_size=1, max_size=5).map(" ".join).filter(lambda s: not is_not_found(s))
MONEY = st.integers(0, 10_000_000).map(lambda c: f"${c // 100:,}.{c % 100:02d}")
DATE = st.dates().filter(lambda d: d.year >= 1900).map(lambda d: d.strftime("%d/%m/%Y"))
ABN = st.from_regex(r"\A[1-9][0-9] [0-9]{3} [0-9]{3} [0-9]{3}\Z")
BOOL = st.sampled_from(["true", "false"])
QTY = st.integers(1, 999).map(str)
BY_TYPE = {"monetary": MONEY, "date": DATE, "id": ABN, "boolean": BOOL, "text": TEXT}


def value_for(name: str, doc_type: str) -> st.SearchStrategy[str]:
    if name == "DOCUMENT_TYPE":
        return st.just(SCHEMA.document_types[doc_type].label)
    ftype = SCHEMA.field_type(name)
    if ftype == "list":
        item = BY_TYPE.get(SCHEMA.item_type(name), TEXT)
        if name == "LINE_ITEM_QUANTITIES":
            item = QTY
        if name == "STATEMENT_DATE_RANGE":
            item = DATE
        return st.lists(item, min_size=1, max_size=4).map(" | ".join)
    if name == "STATEMENT_DATE_RANGE":
        return st.tuples(DATE, DATE).map(lambda p: f"{p[0]} to {p[1]}")
    return BY_TYPE[ftype]


@st.composite
def documents(draw):
    doc_type = draw(st.sampled_from(DOC_TYPES))
    fields = {}
    for name in SCHEMA.fields_for(doc_type):
        missing = name != "DOCUMENT_TYPE" and draw(st.integers(0, 4)) == 0
        fields[name] = NOT_FOUND if missing else draw(value_for(name, doc_type))
    return doc_type, fields


def _lists(doc_type):
    return [f for f in SCHEMA.fields_for(doc_type) if SCHEMA.field_type(f) == "list"]


RENDERERS = {
    "kv": lambda f, dt: render_kv(f),
    "json": lambda f, dt: render_json(f, _lists(dt)),
    "json-null": lambda f, dt: render_json(f, _lists(dt), not_found_as_null=True),
    "json-fenced": lambda f, dt: "Here are the fields:\n```json\n" + render_json(f, _lists(dt)) + "\n```",
    "markdown-table": lambda f, dt: render_markdown_table(f),
}


# properties ------------------------------------------------------------------------------------
@PROPS
@given(text=st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))), doc_type=st.sampled_from(DOC_TYPES))
def test_parser_never_raises_and_returns_every_field(text, doc_type):
    out = parse_output(text, doc_type, SCHEMA)
    assert list(out) == SCHEMA.fields_for(doc_type)
    assert all(isinstance(v, str) and v for v in out.values())


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_supported_formats_round_trip(fmt):
    render = RENDERERS[fmt]

    @PROPS
    @given(doc=documents())
    def round_trip(doc):
        doc_type, fields = doc
        assert parse_output(render(fields, doc_type), doc_type, SCHEMA) == fields

    round_trip()


@PROPS
@given(text=st.text(), doc_type=st.sampled_from(DOC_TYPES))
def test_normalisation_is_idempotent(text, doc_type):
    once = parse_output(text, doc_type, SCHEMA)
    assert parse_output(render_kv(once), doc_type, SCHEMA) == once


@PROPS
@given(doc=documents())
def test_reparsing_a_parse_is_a_fixed_point(doc):
    doc_type, fields = doc
    once = parse_output(render_json(fields, _lists(doc_type)), doc_type, SCHEMA)
    assert parse_output(render_kv(once), doc_type, SCHEMA) == once


# the backend's own outputs -------------------------------------------------------------------
def visible_values(raw: str, wanted: list[str]) -> dict[str, str]:
    """`FIELD: value` lines of the raw text with a value that is not NOT_FOUND (last one wins)."""
    out = {}
    for line in (raw or "").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        key = canonical_key(m.group(1))
        value = clean_value(m.group(2))
        if key in wanted and value and not is_not_found(value):
            out[key] = value
    return out


def test_no_field_lost_in_parsing(migbench_doc_type, migbench_run):
    _, run, rows = migbench_run
    ok = [r for r in rows if r.doc_type == migbench_doc_type and r.status == "ok"]
    if not ok:
        pytest.skip(f"no completed {migbench_doc_type} documents")
    wanted = SCHEMA.fields_for(migbench_doc_type)
    lost = []
    for r in ok:
        for name, value in visible_values(r.response.text, wanted).items():
            if r.fields.get(name, NOT_FOUND) == NOT_FOUND:
                lost.append(f"{r.doc_id}:{name}={value[:40]!r}")
    assert not lost, f"{run.backend}/{migbench_doc_type}: {len(lost)} values visible in the raw output " \
                     f"but NOT_FOUND after parsing: {', '.join(lost[:5])}"


def test_stored_fields_match_current_parser(migbench_doc_type, migbench_run):
    _, run, rows = migbench_run
    ok = [r for r in rows if r.doc_type == migbench_doc_type and r.status == "ok"]
    if not ok:
        pytest.skip(f"no completed {migbench_doc_type} documents")
    drift = [r.doc_id for r in ok if parse_output(r.response.text, r.doc_type, SCHEMA) != r.fields]
    assert not drift, (f"{run.backend}/{migbench_doc_type}: stored fields of {len(drift)} documents differ from "
                       f"what the parser reads now ({drift[:5]}): run `migbench rescore {run.run_id}`")

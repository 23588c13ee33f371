"""What the emulated model answers. SYNTHETIC: no model runs here.

A responder maps a decoded request to reply text. `GroundTruthResponder` answers with a
dataset document's ground truth, degraded at a chosen error rate, so the whole pipeline (adapter,
parser, scorer) can be exercised with a known expected score; it never measures a real model.
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from migbench.contracts import NOT_FOUND, Document, InputError
from migbench.emulator.protocol import ParsedRequest
from migbench.schema import Schema, load_schema


class Responder(Protocol):
    def __call__(self, request: ParsedRequest) -> str: ...


def answer_for_tool(responder: Responder, request: ParsedRequest) -> str:
    """A responder's answer to a request that offers a tool: its JSON rendering where it has one
    (`json_answer`), so the emulator can answer with a tool call whatever its text style; otherwise
    its usual text (a scripted answer decides for itself: a JSON object or prose)."""
    as_json = getattr(responder, "json_answer", None)
    return as_json(request) if callable(as_json) else responder(request)


class ScriptedResponder:
    """Answers from a list of texts (in order, cycling) or from a callable of the request."""

    synthetic = True

    def __init__(self, texts: Sequence[str] | Callable[[ParsedRequest], str], cycle: bool = True):
        if not callable(texts) and not texts:
            raise ValueError("ScriptedResponder needs at least one text or a callable")
        self._texts = texts
        self._cycle = cycle
        self._i = 0
        self._lock = threading.Lock()

    def __call__(self, request: ParsedRequest) -> str:
        if callable(self._texts):
            return self._texts(request)
        with self._lock:
            i = self._i
            self._i += 1
        if i >= len(self._texts) and not self._cycle:
            raise IndexError(f"ScriptedResponder ran out of texts after {len(self._texts)}")
        return self._texts[i % len(self._texts)]


# --- rendering ------------------------------------------------------------------------------------

def render_fields(fields: dict[str, str], style: str) -> str:
    """The incumbent's answer formats: `FIELD: value` lines, or a JSON object."""
    try:  # migbench.parsing owns the canonical renderers once it exists
        from migbench import parsing

        fn = getattr(parsing, "render_kv" if style == "kv" else "render_json", None)
        if fn is not None:
            return fn(fields)
    except ImportError:
        pass
    if style == "json":
        return json.dumps(fields, indent=2, ensure_ascii=False)
    return "\n".join(f"{k}: {v}" for k, v in fields.items())


def doc_type_from_prompt(prompt: str, schema: Schema) -> str | None:
    """The document type whose field names the prompt mentions most (labels break ties)."""
    text = prompt.upper()
    best, best_score = None, 0.0
    for key, spec in schema.document_types.items():
        named = sum(1 for f in spec.fields if f in text)
        score = named / len(spec.fields) + (0.5 if spec.label.replace("_", " ") in text.replace("_", " ") else 0)
        if score > best_score:
            best, best_score = key, score
    return best


class NotFoundResponder:
    """Answers NOT_FOUND for every field of the document type the prompt asks about."""

    synthetic = True

    def __init__(self, style: str = "kv", schema: Schema | None = None, default_doc_type: str = "receipt"):
        self.style = style
        self.schema = schema or load_schema()
        self.default_doc_type = default_doc_type

    def __call__(self, request: ParsedRequest) -> str:
        return self._answer(request, self.style)

    def json_answer(self, request: ParsedRequest) -> str:
        return self._answer(request, "json")

    def _answer(self, request: ParsedRequest, style: str) -> str:
        dt = doc_type_from_prompt(request.prompt + "\n" + (request.system or ""), self.schema) or self.default_doc_type
        return render_fields({f: NOT_FOUND for f in self.schema.fields_for(dt)}, style)


# --- perceptual matching --------------------------------------------------------------------------

# A 16x16 average hash collides on this project's receipts (scans of small receipts on white A4
# pages: two different documents hashed identically); 32x32 separated all 126 SROIE dev pages and
# matched every one after 1/2, 1/3 downscaling and a 1568 px JPEG q70 re-encode. The nearest few
# by hash are re-ranked on a 64x64 thumbnail so near-ties go to the visually closest page.
HASH_SIDE = 32
THUMB_SIDE = 64
RERANK = 5
DRAFT_SIDE = 1024  # JPEG decode scale floor: far above what the hash and thumbnail need


def _gray(img: Any) -> Any:
    return img.convert("L")


def average_hash(img: Any, side: int = HASH_SIDE) -> int:
    """Mean-threshold hash of a side x side grayscale thumbnail (survives resizing and re-encoding)."""
    from PIL import Image

    px = _gray(img).resize((side, side), Image.Resampling.BOX).tobytes()
    mean = sum(px) / len(px)
    bits = 0
    for p in px:
        bits = (bits << 1) | (1 if p > mean else 0)
    return bits


def thumbnail(img: Any, side: int = THUMB_SIDE) -> bytes:
    from PIL import Image

    return _gray(img).resize((side, side), Image.Resampling.BOX).tobytes()


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _thumb_distance(a: bytes, b: bytes) -> int:
    return sum(abs(x - y) for x, y in zip(a, b))


def open_image(data: bytes) -> Any:
    """Decode image bytes, upright; large JPEGs are decoded at reduced scale (all the hash needs)."""
    from migbench.images import upright
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("L", (DRAFT_SIDE, DRAFT_SIDE))
    return _gray(upright(img))


def document_pages(path: Any) -> list[Any]:
    """A dataset document's pages, read once, as the runner's pipeline sees them (EXIF applied)."""
    from pathlib import Path

    from migbench.images import load_pages_from_bytes, read_document

    data = read_document(path)
    if data[:3] == b"\xff\xd8\xff":  # JPEG: decode in draft mode, 10x faster on A4 scans
        try:
            return [open_image(data)]
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{Path(path).name}: broken or truncated image ({exc})") from None
    return load_pages_from_bytes(data, Path(path).name)


@dataclass(frozen=True)
class Match:
    doc: Document
    page: int
    distance: int  # Hamming distance between average hashes (of HASH_SIDE**2 bits)


# --- degradation ----------------------------------------------------------------------------------

_DATE = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{2,4})")


def swap_day_month(value: str) -> str:
    m = _DATE.search(value)
    if not m:
        return typo(value, random.Random(value))
    d, sep, mo, y = m.groups()
    if d != mo and int(d) <= 12 and int(mo) <= 12:
        new = f"{mo}{sep}{d}{sep}{y}"
    else:  # a swap would be invalid or a no-op: move the day instead, still a wrong date
        new = f"{(int(d) % 28) + 1:02d}{sep}{mo}{sep}{y}"
    return value[: m.start()] + new + value[m.end():]


def perturb_amount(value: str, rng: random.Random) -> str:
    from migbench.normalize import parse_amount

    amount = parse_amount(value)
    if amount is None or amount == 0:
        return typo(value, rng)
    factor = rng.choice([Decimal("1.1"), Decimal("0.9"), Decimal(10)])  # all beyond the 1% tolerance
    new = (amount * factor).quantize(Decimal("0.01"))
    return ("$" if "$" in value else "") + f"{new:.2f}"


def typo(value: str, rng: random.Random) -> str:
    letters = [i for i, c in enumerate(value) if c.isalnum()]
    if len(letters) < 2:
        return value + "X"
    i = rng.choice(letters[:-1])
    chars = list(value)
    if chars[i] != chars[i + 1] and rng.random() < 0.5:
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    else:
        chars[i] = "X" if chars[i] != "X" else "Y"
    return "".join(chars)


def change_digit(value: str, rng: random.Random) -> str:
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    if not digits:
        return typo(value, rng)
    i = rng.choice(digits)
    return value[:i] + str((int(value[i]) + rng.randint(1, 9)) % 10) + value[i + 1:]


def degrade_value(value: str, field_type: str, rng: random.Random) -> str:
    if field_type == "monetary":
        return perturb_amount(value, rng)
    if field_type == "date":
        return swap_day_month(value)
    if field_type == "id":
        return change_digit(value, rng)
    if field_type == "boolean":
        return "false" if value.strip().lower() in ("true", "yes", "1") else "true"
    return typo(value, rng)


class GroundTruthResponder:
    """SYNTHETIC answers: the ground truth of the document whose page best matches the request image.

    Each field is degraded with probability `error_rate` (dropped to NOT_FOUND, or an amount
    perturbed, day/month swapped, a digit or letter changed), deterministically per
    (seed, document, field) so concurrent runs give the same answers.
    """

    synthetic = True

    def __init__(self, docs: Iterable[Document] | Any, error_rate: float = 0.0, seed: int = 0, style: str = "kv",
                 schema: Schema | None = None, max_distance: int = 200):
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        if style not in ("kv", "json"):
            raise ValueError(f"style must be kv or json, got {style!r}")
        self.error_rate = error_rate
        self.seed = seed
        self.style = style
        self.schema = schema or load_schema()
        self.max_distance = max_distance
        self.docs = list(getattr(docs, "documents", docs))
        if not self.docs:
            raise ValueError("GroundTruthResponder needs at least one document")
        self._index: list[tuple[int, bytes, Document, int]] = []
        for doc in self.docs:
            try:
                pages = document_pages(doc.path)
            except InputError:
                continue  # an unreadable document never reaches the service either
            for page, img in enumerate(pages):
                self._index.append((average_hash(img), thumbnail(img), doc, page))
        if not self._index:
            raise ValueError("GroundTruthResponder: none of the documents could be read")
        self.degradations: dict[str, dict[str, str]] = {}  # doc_id -> field -> what was done
        self.last_match: Match | None = None
        self._lock = threading.Lock()

    def match_image(self, data: bytes) -> Match:
        img = open_image(data)
        h, th = average_hash(img), thumbnail(img)
        near = sorted(((hamming(h, ph), pt, d, p) for ph, pt, d, p in self._index), key=lambda t: t[0])[:RERANK]
        dist, _, doc, page = min(near, key=lambda t: _thumb_distance(th, t[1]))
        return Match(doc, page, dist)

    def answer_fields(self, doc: Document) -> dict[str, str]:
        fields: dict[str, str] = {}
        done: dict[str, str] = {}
        for name in self.schema.fields_for(doc.doc_type):
            truth = doc.ground_truth.get(name, NOT_FOUND)
            rng = random.Random(f"{self.seed}:{doc.doc_id}:{name}")
            if truth == NOT_FOUND or rng.random() >= self.error_rate:
                fields[name] = truth
                continue
            if rng.random() < 1 / 3:
                fields[name], done[name] = NOT_FOUND, "dropped"
            elif self.schema.field_type(name) == "list":
                items = truth.split(self.schema.list_separator)
                k = rng.randrange(len(items))
                items[k] = degrade_value(items[k], self.schema.item_type(name), rng)
                fields[name], done[name] = self.schema.list_separator.join(items), f"item {k} changed"
            else:
                fields[name], done[name] = degrade_value(truth, self.schema.field_type(name), rng), "changed"
            if fields[name] == truth:  # a degradation that happened to be a no-op still counts as wrong
                fields[name], done[name] = NOT_FOUND, "dropped"
        with self._lock:
            self.degradations[doc.doc_id] = done
        return fields

    def __call__(self, request: ParsedRequest) -> str:
        return self._answer(request, self.style)

    def json_answer(self, request: ParsedRequest) -> str:
        return self._answer(request, "json")

    def _answer(self, request: ParsedRequest, style: str) -> str:
        best: Match | None = None
        for img in request.images:
            m = self.match_image(img.data)
            if best is None or m.distance < best.distance:
                best = m
        with self._lock:
            self.last_match = best
        if best is None or best.distance > self.max_distance:
            dt = doc_type_from_prompt(request.prompt, self.schema) or self.docs[0].doc_type
            return render_fields({f: NOT_FOUND for f in self.schema.fields_for(dt)}, style)
        return render_fields(self.answer_fields(best.doc), style)

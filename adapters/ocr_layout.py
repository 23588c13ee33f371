"""OCR lines with boxes, and grouping them into visual rows.

Pure data and geometry: no OCR engine here, so the rules built on top are testable from
hand-written line lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in page pixels (axis-aligned)
    score: float = 1.0
    page: int = 0

    @property
    def x0(self) -> float:
        return self.box[0]

    @property
    def x1(self) -> float:
        return self.box[2]

    @property
    def y0(self) -> float:
        return self.box[1]

    @property
    def y1(self) -> float:
        return self.box[3]

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def height(self) -> float:
        return max(1.0, self.box[3] - self.box[1])

    def to_compact(self) -> list[Any]:
        return [self.text, [round(v) for v in self.box], round(self.score, 3), self.page]

    @classmethod
    def from_compact(cls, row: Sequence[Any]) -> OcrLine:
        text, box, score = row[0], row[1], row[2]
        page = row[3] if len(row) > 3 else 0
        return cls(str(text), tuple(float(v) for v in box), float(score), int(page))  # type: ignore[arg-type]

    @classmethod
    def from_quad(cls, quad: Iterable[Sequence[float]], text: str, score: float, page: int = 0) -> OcrLine:
        pts = [(float(p[0]), float(p[1])) for p in quad]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return cls(text, (min(xs), min(ys), max(xs), max(ys)), float(score), page)


def reading_order(lines: Iterable[OcrLine]) -> list[OcrLine]:
    return sorted(lines, key=lambda ln: (ln.page, ln.cy, ln.x0))


def group_rows(lines: Iterable[OcrLine], overlap: float = 0.5) -> list[list[OcrLine]]:
    """Group lines whose vertical extents overlap into rows, each row sorted left to right.

    Receipts print a label and its amount as separate boxes on one row ("TOTAL ..... 12.50");
    two boxes share a row when their vertical overlap is at least `overlap` of the smaller height.
    """
    rows: list[list[OcrLine]] = []
    for ln in reading_order(lines):
        best, best_ov = None, 0.0
        for row in rows[-4:]:  # only recent rows can still overlap in reading order
            ref = row[0]
            if ref.page != ln.page:
                continue
            inter = min(ref.y1, ln.y1) - max(ref.y0, ln.y0)
            ov = inter / min(ref.height, ln.height)
            if ov >= overlap and ov > best_ov:
                best, best_ov = row, ov
        if best is None:
            rows.append([ln])
        else:
            best.append(ln)
    for row in rows:
        row.sort(key=lambda ln: ln.x0)
    return rows


def row_text(row: Sequence[OcrLine]) -> str:
    return " ".join(ln.text.strip() for ln in row if ln.text.strip())


# ---------------------------------------------------------------------------------------------
# PDF text layer -> the same lines OCR gives
# ---------------------------------------------------------------------------------------------

def pdf_text_lines(textpage, page_height_pt: float, page: int, scale: float) -> list[OcrLine]:
    """A PDF page's text layer as OcrLines in page pixels (at `scale` px per point, top-left origin),
    so the rules run unchanged on either source. Characters are joined into runs along a baseline; a
    gap wider than about one em starts a new box (columns, label and value apart), a narrower one
    wider than a thin space becomes a space (PDFs often position words without space characters)."""
    import pypdfium2.raw as pdfium_c

    lines: list[OcrLine] = []
    run: list[str] = []
    box: list[float] = []  # x0, y0 (bottom), x1, y1 (top) in points
    pending_space = False

    def flush() -> None:
        text = "".join(run).strip()
        if text:
            x0, b, x1, t = box
            lines.append(OcrLine(text, (x0 * scale, (page_height_pt - t) * scale, x1 * scale,
                                        (page_height_pt - b) * scale), 1.0, page))
        run.clear()
        box.clear()

    for i in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(textpage.raw, i)
        ch = chr(code) if 0 < code < 0x110000 else ""
        if not ch or ch.isspace() or code < 32:
            pending_space = pending_space or bool(run)
            if ch in "\r\n":
                flush()
                pending_space = False
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)  # advance boxes: no side bearings
        if right <= left or top <= bottom:
            continue
        if box:
            h = max(box[3] - box[1], top - bottom, 1.0)
            same_line = abs((bottom + top) / 2 - (box[1] + box[3]) / 2) < 0.5 * h
            gap = left - box[2]
            if not same_line or gap > 1.2 * h or gap < -h:
                flush()
                pending_space = False
            elif pending_space or gap > 0.25 * h:
                run.append(" ")
        if not box:
            box.extend((left, bottom, right, top))
        else:
            box[0], box[1] = min(box[0], left), min(box[1], bottom)
            box[2], box[3] = max(box[2], right), max(box[3], top)
        run.append(ch)
        pending_space = False
    flush()
    return lines

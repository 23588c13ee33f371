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

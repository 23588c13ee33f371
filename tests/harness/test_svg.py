"""SVG chart helpers: well-formed, escaped, and drawn from the numbers they are given."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from migbench import svg

NS = "{http://www.w3.org/2000/svg}"


def parse(doc: str) -> ET.Element:
    return ET.fromstring(doc)  # raises on malformed markup


def test_heatmap_draws_one_cell_per_row_and_column_with_missing_as_na() -> None:
    doc = svg.heatmap(["a", "b"], ["X", "Y", "Z"], {("a", "X"): 0.9, ("a", "Y"): 0.1, ("b", "Z"): 1.0})
    root = parse(doc)
    cells = [r for r in root.iter(f"{NS}rect") if r.get("data-value") is not None]
    assert len(cells) == 6
    assert [c.get("data-value") for c in cells].count("n/a") == 3
    assert svg.score_colour(None) in {c.get("fill") for c in cells}


def test_text_from_data_is_escaped_so_it_cannot_become_markup() -> None:
    nasty = '<script>alert(1)</script>&"'
    for doc in (svg.heatmap([nasty], [nasty], {(nasty, nasty): 0.5}, tooltips={(nasty, nasty): nasty}, title=nasty),
                svg.bar_ci([svg.Bar(nasty, 0.5, 0.4, 0.6)], title=nasty),
                svg.scatter([svg.Point(nasty, 0.01, 0.5, 2.0)], title=nasty),
                svg.histograms({nasty: [1.0, 2.0]}, title=nasty)):
        root = parse(doc)
        assert not [e for e in root.iter() if e.tag.endswith("script")]
        assert "<script>" not in doc and "&lt;script&gt;" in doc


def test_score_colour_runs_from_red_to_green() -> None:
    red, green = svg.score_colour(0.0), svg.score_colour(1.0)
    assert int(red[1:3], 16) > int(red[3:5], 16)  # more red than green at 0
    assert int(green[3:5], 16) > int(green[1:3], 16)  # more green than red at 1
    assert svg.score_colour(float("nan")) == svg.score_colour(None)


def test_bar_whiskers_span_the_interval_in_plot_units() -> None:
    doc = svg.bar_ci([svg.Bar("a", 0.5, 0.25, 0.75), svg.Bar("b", None)], x_max=1.0)
    root = parse(doc)
    bar = next(r for r in root.iter(f"{NS}rect") if r.get("class") == "bar")
    whisker = next(g for g in root.iter(f"{NS}g") if g.get("class") == "whisker")
    main_line = next(iter(whisker))
    x0 = float(bar.get("x"))
    width = float(bar.get("width"))  # 0.5 of the axis
    assert float(main_line.get("x1")) - x0 == pytest.approx(width / 2, abs=0.2)
    assert float(main_line.get("x2")) - x0 == pytest.approx(width * 1.5, abs=0.2)
    assert "not measured" in doc  # the bar without a mean is not drawn as zero
    assert len([r for r in root.iter(f"{NS}rect") if r.get("class") == "bar"]) == 1


@pytest.mark.parametrize("points, front", [
    ([(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9)], [(1, 0.5), (2, 0.7), (4, 0.9)]),
    ([(1, 0.9), (2, 0.8)], [(1, 0.9)]),
    ([(1, 0.5), (1, 0.6)], [(1, 0.6)]),
])
def test_pareto_front_keeps_only_undominated_points(points: list, front: list) -> None:
    pts = [svg.Point(str(i), x, y) for i, (x, y) in enumerate(points)]
    assert [(p.x, p.y) for p in svg.pareto_front(pts)] == front


def _points(root: ET.Element) -> list[ET.Element]:
    return [c for c in root.iter(f"{NS}circle") if c.get("class") == "point"]


def test_scatter_puts_cost_on_a_log_axis_and_a_free_run_left_of_the_break_with_a_reference_line() -> None:
    doc = svg.scatter([svg.Point("ocr", 0.0, 0.6), svg.Point("a", 0.001, 0.5), svg.Point("b", 0.1, 0.9)])
    root = parse(doc)
    assert re.search(r">0\.01<", doc) and re.search(r">0<", doc)  # a decade tick, and the free column's 0
    free, a, b = _points(root)
    brk = next(e for e in root.iter(f"{NS}line") if e.get("class") == "axis-break")
    assert float(free.get("cx")) < float(brk.get("x1")) < float(a.get("cx")) < float(b.get("cx"))
    # log scale: 0.001 -> 0.01 -> 0.1 are equal steps, so 0.01 sits half way between a and b
    tick = next(e for e in root.iter(f"{NS}text") if e.text == "0.01")
    assert float(tick.get("x")) == pytest.approx((float(a.get("cx")) + float(b.get("cx"))) / 2, abs=0.2)
    ref = next(e for e in root.iter(f"{NS}line") if e.get("class") == "reference")
    assert ref.get("y1") == ref.get("y2") == free.get("cy")  # the free run's accuracy across the chart
    assert float(ref.get("x2")) > float(b.get("cx"))
    assert "not measured" in svg.scatter([])


@pytest.mark.parametrize("pts", [
    [(0.0, 1.0, 9.0), (0.002, 0.0, 9.0), (0.05, 1.0, 9.0)],  # corners, largest markers
    [(0.0001, 0.99, 1.0), (0.0001, 0.99, 30.0)],  # one cost only, near the top
    [(0.0, 0.0, None)],
])
def test_no_marker_is_clipped_by_the_plot_or_the_image(pts: list) -> None:
    root = parse(svg.scatter([svg.Point(str(i), x, y, s) for i, (x, y, s) in enumerate(pts)]))
    plot = next(root.iter(f"{NS}rect"))
    x0, y0 = float(plot.get("x")), float(plot.get("y"))
    x1, y1 = x0 + float(plot.get("width")), y0 + float(plot.get("height"))
    for c in _points(root):
        cx, cy, r = float(c.get("cx")), float(c.get("cy")), float(c.get("r"))
        assert x0 <= cx - r and cx + r <= x1 and y0 <= cy - r and cy + r <= y1, (cx, cy, r)
    assert x1 <= float(root.get("width")) and y1 <= float(root.get("height"))


def test_marker_size_has_a_key_drawn_to_the_same_scale() -> None:
    root = parse(svg.scatter([svg.Point("fast", 0.01, 0.5, 1.0), svg.Point("slow", 0.1, 0.9, 9.0)]))
    radii = [float(c.get("r")) for c in _points(root)]
    assert radii[0] < radii[1]
    keys = [float(c.get("r")) for c in root.iter(f"{NS}circle") if c.get("class") == "size-key"]
    assert keys == pytest.approx(radii)  # the key shows the smallest and the largest value
    texts = [e.text for e in root.iter(f"{NS}text")]
    assert "marker area: p95 latency" in texts and "1 s" in texts and "9 s" in texts
    no_sizes = parse(svg.scatter([svg.Point("a", 0.01, 0.5)]))
    assert not [c for c in no_sizes.iter(f"{NS}circle") if c.get("class") == "size-key"]


def test_frontier_line_is_drawn_only_through_two_or_more_frontier_points() -> None:
    a, b = svg.Point("a", 0.0, 0.5, on_frontier=True), svg.Point("b", 0.1, 0.9, on_frontier=True)
    root = parse(svg.scatter([a, b]))
    line = next(e for e in root.iter(f"{NS}polyline") if e.get("class") == "frontier")
    pa, pb = _points(root)
    # a staircase: along a's accuracy to b's cost, then up to b
    assert line.get("points") == f"{pa.get('cx')},{pa.get('cy')} {pb.get('cx')},{pa.get('cy')} {pb.get('cx')},{pb.get('cy')}"
    b.on_frontier = False
    assert 'class="frontier"' not in svg.scatter([a, b])


def test_histogram_counts_every_value_in_range_once() -> None:
    rng = np.random.default_rng(1)
    values = list(rng.exponential(2.0, 500))
    edges = [max(values) * k / 20 for k in range(21)]
    counts = svg.histogram_counts(values, edges)
    assert sum(counts) == 500  # the maximum lands in the last (closed) bin
    assert counts == list(np.histogram(values, bins=edges)[0])
    assert svg.histogram_counts([-1.0, 100.0], [0.0, 1.0]) == [0]


def test_histograms_mark_missing_series_and_draw_bins() -> None:
    doc = svg.histograms({"a": [1.0, 2.0, 2.5], "b": []})
    root = parse(doc)
    assert len([r for r in root.iter(f"{NS}rect") if r.get("class") == "bin"]) >= 2
    assert "not measured" in doc
    assert "no latencies" in svg.histograms({"a": []})

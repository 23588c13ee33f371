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


def test_scatter_uses_log_cost_axis_unless_a_cost_is_zero() -> None:
    logged = svg.scatter([svg.Point("a", 0.001, 0.5), svg.Point("b", 0.1, 0.9)])
    assert re.search(r">0\.01<", logged)  # a decade tick between the two costs
    linear = svg.scatter([svg.Point("a", 0.0, 0.5), svg.Point("b", 0.1, 0.9)])
    parse(linear)
    assert len(re.findall(r'class="point"', linear)) == 2
    assert "not measured" in svg.scatter([])


def test_scatter_marker_radius_grows_with_latency_and_frontier_is_drawn() -> None:
    a, b = svg.Point("fast", 0.01, 0.5, 1.0, on_frontier=True), svg.Point("slow", 0.1, 0.9, 9.0, on_frontier=True)
    root = parse(svg.scatter([a, b]))
    radii = [float(c.get("r")) for c in root.iter(f"{NS}circle") if c.get("class") == "point"]
    assert radii[0] < radii[1]
    assert any(e.get("class") == "frontier" for e in root.iter(f"{NS}polyline"))


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

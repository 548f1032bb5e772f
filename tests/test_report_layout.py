"""Layout of the sweep page and of the figures, from a real (tiny) sweep: the seeds column counts seeds,
values never wrap, wide tables scroll in their own box, and no legend covers the data of any axes."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from matplotlib.transforms import Bbox

from dejavu.report.figures import FIGURES, training_curves
from dejavu.report.sweep import sweep_figure
from dejavu.sweep import load_study, point_row, run_sweep

TINY = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "train.epochs=2", "train.batch_size=16", "train.warmup_epochs=0",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50",
]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Two points x two seeds over one split (the points share each seed's training): 4 tiny trainings."""
    root = tmp_path_factory.mktemp("layout")
    study = root / "study.yaml"
    study.write_text(f"overrides: {json.dumps(TINY)}\nseeds: 2\nredraw_split: false\n"
                     "grid: {attack.k: [3, 5]}\n")
    out = root / "sweep"
    run_sweep(study, out, log=lambda message: None)
    _, points = load_study(study)
    return out, [point_row(point, out / "points" / point.name) for point in points]


class Tables(HTMLParser):
    """Every table: its enclosing element, header texts, and rows of (text, attributes) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.open: list[tuple[str, dict]] = []  # enclosing elements (void elements never pushed)
        self.cell: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"parent": self.open[-1], "header": [], "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self.cell = [tag, "", attrs]
        if tag not in ("br", "img", "meta", "hr"):
            self.open.append((tag, attrs))

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1]["rows"][-1].append(tuple(self.cell))
            self.cell = None
        while self.open and self.open.pop()[0] != tag:
            pass


def tables(page: str) -> list[dict]:
    parser = Tables()
    parser.feed(page)
    for table in parser.tables:
        header, *rows = table["rows"]
        assert all(kind == "th" for kind, _, _ in header)
        table["header"] = [text for _, text, _ in header]
        table["rows"] = [[(text, attrs) for _, text, attrs in row] for row in rows]
    return parser.tables


def classes(attrs: dict) -> set[str]:
    return set((attrs.get("class") or "").split())


def test_the_seeds_column_counts_the_seeds_and_keeps_their_ids(tiny_sweep):
    out, _ = tiny_sweep
    summary, runs = tables((out / "index.html").read_text(encoding="utf-8"))
    column = summary["header"].index("seeds")
    assert [row[0][0] for row in summary["rows"]] == ["3", "5"]  # attack.k, one row per point
    assert [row[column][0] for row in summary["rows"]] == ["2", "2"]
    assert [row[column][1].get("title") for row in summary["rows"]] == ["seed ids: 0, 1"] * 2
    # The runs table lists each seed by its id.
    seed = runs["header"].index("seed")
    assert [row[seed][0] for row in runs["rows"]] == ["0", "1", "0", "1"]


def test_values_never_wrap_and_wide_tables_scroll_in_their_own_box(tiny_sweep):
    out, _ = tiny_sweep
    page = (out / "index.html").read_text(encoding="utf-8")
    found = tables(page)
    assert len(found) == 2
    for table in found:
        assert table["parent"][0] == "div" and "table-scroll" in classes(table["parent"][1])
        for row in table["rows"]:
            for text, attrs in row:
                if text == "report" or attrs.get("class") == "text":  # the link, the verdict
                    continue
                assert "num" in classes(attrs), (text, attrs)
    # Two seeds: "mean ± sd" in the points' table. A "target / reference" cell may break only between its
    # two values, each in a span that does not wrap (the slash stays with the first).
    assert any("±" in text for row in found[0]["rows"] for text, _ in row)
    pairs = re.findall(r'<td class="num pair">(.*?)</td>', page)
    assert len(pairs) == 2 * 2 + 2 * 4  # two per point, two per run
    assert all(re.fullmatch(r"<span>[^<]+ /</span> <span>[^<]+</span>", pair) for pair in pairs), pairs[:2]
    css = resources.files("dejavu.report").joinpath("templates/report.css").read_text(encoding="utf-8")
    assert re.search(r"(^|[},\s])td\.num[^{]*\{[^}]*white-space:\s*nowrap", css)
    assert re.search(r"td\.num\.pair span\s*\{[^}]*white-space:\s*nowrap", css)
    assert re.search(r"\.table-scroll\s*\{[^}]*overflow-x:\s*auto", css)


def legend_overlaps(figure) -> list[str]:
    """Each legend drawn on the figure (on it, a subfigure or an axes) that intersects an axes' plotting
    area or sticks out of the figure, and any legend text under 8 points."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = [*figure.legends, *(legend for sub in figure.subfigs for legend in sub.legends),
               *(axes.get_legend() for axes in figure.get_axes() if axes.get_legend() is not None)]
    assert legends, "no legend drawn"
    whole = figure.bbox
    problems = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for axes in figure.get_axes():
            if not axes.axison:
                continue
            overlap = Bbox.intersection(box, axes.get_window_extent(renderer))
            if overlap is not None and overlap.width > 0.5 and overlap.height > 0.5:
                problems.append(f"legend {[t.get_text() for t in legend.get_texts()]} covers the axes "
                                f"{axes.get_title() or axes.get_ylabel()!r}")
        if box.x0 < whole.x0 - 1 or box.y0 < whole.y0 - 1 or box.x1 > whole.x1 + 1 or box.y1 > whole.y1 + 1:
            problems.append(f"legend {[t.get_text() for t in legend.get_texts()]} is cut off")
        problems += [f"legend text {t.get_text()!r} at {t.get_fontsize()} pt" for t in legend.get_texts()
                     if t.get_fontsize() < 8]
    return problems


def test_no_legend_covers_the_sweep_figures_data(tiny_sweep):
    _, rows = tiny_sweep
    figure = sweep_figure(rows, "attack.k")
    assert len([axes for axes in figure.get_axes() if axes.axison]) == 4
    assert legend_overlaps(figure) == []
    # Also with the pooled wording (longer labels) and long values on the x axis.
    long_values = [{**row, "attack.k": f"projector{row['attack.k']}-with-a-long-name"} for row in rows]
    assert legend_overlaps(sweep_figure(long_values, "attack.k", pooled=True)) == []


def test_no_legend_covers_a_run_figures_data(tiny_sweep):
    out, _ = tiny_sweep
    point = next((out / "points").iterdir())
    metrics = json.loads((point / "metrics.json").read_text())
    for name, draw in FIGURES.items():
        if name == "gap":  # no legend: the rows are labelled on the axis
            continue
        assert legend_overlaps(draw(metrics)) == [], name
    losses = {model: json.loads((point / "models" / model / "history.json").read_text())["loss"] for model in "AB"}
    assert legend_overlaps(training_curves(losses, "vicreg")) == []

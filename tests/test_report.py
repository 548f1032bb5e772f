"""report.html from a tiny real run: self-contained, verdict on top, figures, and a gallery whose
examples and neighbours are exactly those of samples.csv and the neighbours npz (joined on ids); values
are escaped by the templates, the numbers table follows the metrics schema, and the sweep page shares the
run report's base template."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jinja2
import markupsafe
import numpy as np
import pytest
from PIL import Image

from dejavu.artifacts import load_table
from dejavu.config import load_config
from dejavu.metrics.partition import PARTS
from dejavu.metrics.schema import SUMMARY_ROWS
from dejavu.report.figures import FIGURES
from dejavu.report.format import FORMATS
from dejavu.report.gallery import gallery_section, read_samples
from dejavu.report.html import render, write_figures
from dejavu.report.sections import stage_timings
from dejavu.report.sweep import write_sweep_report
from dejavu.report.templating import render as render_template
from dejavu.runs import Run, load_npz
from dejavu.stages import STAGE_BY_NAME, run_all

TINY_REPORT = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "attack.k=5", "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Elements(HTMLParser):
    """Every start tag as (tag, attributes) in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(text)
    return parser.tags


def assert_self_contained(text: str) -> None:
    """No external resource: no script/link/iframe, no remote URL, images only as PNG data URIs."""
    tags = parse(text)
    for tag, attrs in tags:
        for key in ("src", "href", "action", "data"):
            value = attrs.get(key) or ""
            assert not re.match(r"\s*([a-z]+:)?//", value, re.I), (tag, key, value[:80])
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    assert not re.search(r"url\(|@import", text, re.I)
    images = [attrs for tag, attrs in tags if tag == "img"]
    assert images and all((a.get("src") or "").startswith("data:image/png;base64,") for a in images)


def page_text(text: str) -> str:
    """The page's visible text, tags stripped and entities decoded."""
    parts: list[str] = []
    parser = HTMLParser()
    parser.handle_data = parts.append  # type: ignore[method-assign]
    parser.feed(text)
    return " ".join(" ".join(parts).split())


def has_class(attrs: dict[str, str | None], name: str) -> bool:
    return name in (attrs.get("class") or "").split()


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    run = Run(tmp_path_factory.mktemp("report") / "run", load_config(None, TINY_REPORT))
    run.claim()
    run_all(run, log=lambda _: None)
    return run, run.root / "report.html"


def expected_gallery(run: Run, samples: list[dict[str, str]]) -> list[str]:
    memorized = [r for r in samples if r["partition"] == "memorized"]
    memorized.sort(key=lambda r: (-float(r["target_confidence"]), r["id"]))
    return [r["id"] for r in memorized[: run.config.report.gallery]]


def test_report_is_self_contained_with_verdict_first(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    outcome = json.loads((run.root / "metrics.json").read_text())["outcomes"]["image"]
    sentence = str(markupsafe.escape(outcome["sentence"]))  # as the templates escape it
    assert sentence in text
    # The headline is the first thing on the page, right under the title: its decision, then its sentence.
    head = f'<div class="verdict {outcome["decision"]}" id="outcome-image">'
    assert text.index("<h1") < text.index(head) < text.index(sentence) < text.index("<h2")
    assert_self_contained(text)


def test_figures_are_valid_pngs(report_run: tuple[Run, Path]) -> None:
    run, _ = report_run
    for name in FIGURES:
        path = run.figures_dir / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        with Image.open(path) as image:
            image.verify()


def test_gallery_shows_the_most_confident_memorized_with_their_neighbours(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    samples = read_samples(run.root / "samples.csv")
    by_id = {r["id"]: r for r in samples}
    tags = parse(path.read_text(encoding="utf-8"))
    items = [attrs for tag, attrs in tags if has_class(attrs, "gallery-item")]
    assert [a["data-id"] for a in items] == expected_gallery(run, samples)
    assert len(items) == min(run.config.report.gallery, sum(r["partition"] == "memorized" for r in samples))

    # Neighbour figures as rendered, per gallery item and row, to check the attributes match the page.
    rendered: list[dict[str, list[tuple[str, int]]]] = []
    role = ""
    for tag, attrs in tags:
        if has_class(attrs, "gallery-item"):
            rendered.append({"target": [], "reference": []})
        elif has_class(attrs, "nb-row"):
            role = attrs["data-role"] or ""
        elif has_class(attrs, "nb"):
            rendered[-1][role].append((attrs["data-id"] or "", int(attrs["data-rank"] or 0)))
    labels = dict(zip(load_table(run).ids.tolist(), load_table(run).labels.tolist()))
    for item, drawn in zip(items, rendered):
        row = by_id[item["data-id"]]
        for role in ("target", "reference"):
            npz = load_npz(run.neighbours_dir / f"model_{row[f'{role}_model']}" / f"crops_{row['direction']}.npz")
            neighbour_ids = npz["neighbour_ids"][npz["ids"].tolist().index(row["id"])].tolist()
            assert json.loads(item[f"data-{role}-neighbour-ids"]) == [nid for nid, _ in drawn[role]]
            # Each drawn neighbour is the one at its stated rank among the k, no more than report.neighbours.
            assert all(neighbour_ids[rank - 1] == nid for nid, rank in drawn[role])
            assert len(drawn[role]) <= run.config.report.neighbours
            # The true class's neighbours come first, nearest first: they are the first of that class.
            true_ranks = [rank for nid, rank in drawn[role] if labels[nid] == int(row["label"])]
            hand = [r for r, nid in enumerate(neighbour_ids, start=1) if labels[nid] == int(row["label"])]
            assert true_ranks == hand[:len(true_ranks)]


def test_gallery_caps_at_its_size_and_says_when_empty(report_run: tuple[Run, Path]) -> None:
    run, _ = report_run
    table = load_table(run)
    samples = read_samples(run.root / "samples.csv")
    all_memorized = [{**r, "partition": "memorized"} for r in samples]
    tags = parse(gallery_section(run, table, all_memorized))
    items = [a["data-id"] for _, a in tags if has_class(a, "gallery-item")]
    assert items == expected_gallery(run, all_memorized) and len(items) == run.config.report.gallery
    none = gallery_section(run, table, [{**r, "partition": "unassociated"} for r in samples])
    assert "no memorized examples" in none and "gallery-item" not in none


def test_control_statement_matches_metrics(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    control = json.loads((run.root / "metrics.json").read_text())["control"]
    text = path.read_text(encoding="utf-8")
    if control["indistinguishable_from_zero"]:
        assert "statistically indistinguishable from zero" in text and "NOT statistically" not in text
    else:
        assert "NOT statistically indistinguishable from zero" in text


def test_training_section_states_the_recipe_and_each_models_loss(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    text = path.read_text(encoding="utf-8")
    section = text[text.index("<h2>Training</h2>"):text.index("<h2>Data split</h2>")]
    t = run.config.train
    assert f"Both models: {t.method} · {t.backbone} · projector {t.projector} · {t.epochs} epochs" in section
    for model in ("A", "B"):
        loss = json.loads((run.model_dir(model) / "history.json").read_text())["loss"]
        assert f"{loss[0]:.4g} → {loss[-1]:.4g}" in section
    assert (run.figures_dir / "training_loss.png").read_bytes()[:8] == PNG_SIGNATURE


def test_membership_inference_section_matches_metrics(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    roc = json.loads((run.root / "metrics.json").read_text())["roc"]
    text = path.read_text(encoding="utf-8")
    start = text.index('<h2 id="membership-inference">Membership-inference view</h2>')
    # After the control, before the other figures; the ROC figure sits inside the section.
    assert text.index("<h2>Negative control</h2>") < start < text.index("<h2>Figures</h2>")
    section = text[start:text.index("<h2>Figures</h2>")]
    assert f"<td>{roc['auc']:.3f}</td><td>{roc['auc_ci'][0]:.3f} to {roc['auc_ci'][1]:.3f}</td>" in section
    for key in ("tpr_at_fpr_0.01", "tpr_at_fpr_0.001"):
        low, high = roc[f"{key}_ci"]
        assert f"<td>{100 * roc[key]:.1f} %</td><td>{100 * low:.1f} % to {100 * high:.1f} %</td>" in section
    assert f"1/{roc['n_nonmembers']} = {roc['min_measurable_fpr']:.3g}" in section
    assert 'id="fig-roc"' in section and text.count('id="fig-roc"') == 1
    assert (run.figures_dir / "roc.png").read_bytes()[:8] == PNG_SIGNATURE


EVIL = '<script>alert("x")</script>'


def test_values_are_escaped_by_the_templates(report_run: tuple[Run, Path], tmp_path: Path) -> None:
    """Class names, the run folder's path and the verdict come from data; markup in them shows as text."""
    run, _ = report_run
    # A run folder whose name holds markup (no '/' allowed in a name).
    root = tmp_path / 'run<b onmouseover="x">&'
    shutil.copytree(run.root, root)
    evil_run = Run(root, run.config)
    table = load_table(evil_run)
    names = np.array([f"{name}{EVIL}" for name in table.class_names.tolist()])
    table = dataclasses.replace(table, class_names=names)
    metrics = json.loads((root / "metrics.json").read_text())
    metrics["outcomes"]["image"]["sentence"] = f"verdict {EVIL}"
    samples = read_samples(root / "samples.csv")
    page = render(evil_run, metrics, write_figures(evil_run, metrics), table, samples, tuple(STAGE_BY_NAME))
    tags = parse(page)
    assert not [tag for tag, _ in tags if tag in ("script", "b")]
    assert html.escape(EVIL, quote=False) in page.replace("&#34;", '"')
    text = page_text(page)
    assert f"verdict {EVIL}" in text and f"Run folder {root}" in text
    # Class names appear in the per-class table, the crops and the gallery, always as text.
    assert text.count(EVIL) >= 2
    assert_self_contained(page)


def test_numbers_table_rows_come_from_the_schema(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    metrics = json.loads((run.root / "metrics.json").read_text())
    summaries = {"pooled": metrics, **{f"direction {k}": v for k, v in metrics["directions"].items()},
                 "control": metrics["control"], **{f"control {k}": v for k, v in metrics["control"]["directions"].items()}}
    # Every key the report asks for exists in every summary it shows (a renamed metric fails here).
    for name, summary in summaries.items():
        missing = [row.key for row in SUMMARY_ROWS if row.key not in summary]
        assert not missing, (name, missing)
    assert all(row.format in FORMATS for row in SUMMARY_ROWS)
    text = path.read_text(encoding="utf-8")
    first = text[text.index("<table class=\"numbers\">"):]
    first = first[:first.index("</table>")]
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)(?: <span class=\"n\">\((.*?)\)</span>)?</td></tr>", first)
    level = round(100 * metrics["ci_level"])
    labels = [f"gap {level} % bootstrap interval" if row.key == "gap_ci95" else row.label for row in SUMMARY_ROWS]
    assert [html.unescape(label) for label, _, _ in cells] == labels
    assert [html.unescape(value) for _, value, _ in cells] == [FORMATS[row.format](metrics[row.key]) for row in SUMMARY_ROWS]
    # The subset rows carry their n (checked against a hand count in tests/test_gallery.py); the others do not.
    subset = {row.key for row in SUMMARY_ROWS if row.key.endswith(("_top20", "_top05")) or row.key in PARTS}
    assert [bool(n) for _, _, n in cells] == [row.key in subset for row in SUMMARY_ROWS]


def test_stage_timings_follow_the_given_order_then_other_markers(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    done = {p.name[:-len(".done.json")] for p in (run.root / "stages").glob("*.done.json")}
    listed = [stage for stage, _ in stage_timings(run, ("metrics", "data"))]
    assert listed[:2] == ["metrics", "data"] and listed[2:] == sorted(done - {"metrics", "data"})
    footer = path.read_text(encoding="utf-8").split("<footer>")[1]
    timings = footer[footer.index('class="timings"'):footer.index("</table>", footer.index('class="timings"'))]
    shown = re.findall(r"<tr><td>([^<]+)</td>", timings)
    # The report stage writes its marker after the page, so it is listed from the next report on.
    assert shown == [name for name in STAGE_BY_NAME if name in done and name != "report"] or \
        shown == [name for name in STAGE_BY_NAME if name in done]


def test_templates_refuse_a_missing_variable() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_template("section_canaries.html")


def _sweep_rows() -> tuple[dict, list[dict], list[dict]]:
    study = {"config": f"base{EVIL}.yaml", "overrides": [], "seeds": 1, "redraw_split": False,
             "sweeps": {"epochs": {"grid": {"attack.epoch": [1, EVIL]}, "zip": False, "overrides": []}}}
    numbers = {"target_acc": 0.5, "reference_acc": 0.4, "gap": 0.1, "gap_ci_low": 0.0, "gap_ci_high": 0.2,
               "mcnemar_p": 0.03, "memorized": 0.2, "correlated": 0.3, "misrepresented": 0.1, "auc": 0.6,
               "control_gap": 0.0, "target_acc_top20": 0.6, "reference_acc_top20": 0.4,
               "backbone_knn_test": 0.5, "backbone_knn_gap": 0.1, "backbone_linear_probe_test": 0.5,
               "backbone_linear_probe_gap": 0.1}
    rows = [{"sweep": "epochs", "attack.epoch": value, "seed": 0, **numbers,
             "report": f"points/epoch={value}/report.html"} for value in (1, EVIL)]
    summary = [{"sweep": "epochs", "attack.epoch": value, "seeds": [0], "verdict": f"0 of 1 {EVIL}",
                "gap": {"mean": 0.1, "sd": 0.0}} for value in (1, EVIL)]
    return study, rows, summary


def test_sweep_page_shares_the_base_and_escapes(report_run: tuple[Run, Path], tmp_path: Path) -> None:
    _, report = report_run
    study, rows, summary = _sweep_rows()
    page = write_sweep_report(tmp_path, study, rows, summary).read_text(encoding="utf-8")
    css = resources.files("dejavu.report").joinpath("templates/report.css").read_text(encoding="utf-8")
    run_page = report.read_text(encoding="utf-8")
    # One base template: the same head and the same inline stylesheet on both pages.
    for text in (page, run_page):
        assert text.startswith("<!DOCTYPE html>") and text.count("<style>") == 1
        assert re.search(r"<style>(.*?)</style>", text, re.S).group(1).strip() == css.strip()  # type: ignore[union-attr]
        assert '<meta name="viewport"' in text
    assert_self_contained(page)
    assert not [tag for tag, _ in parse(page) if tag == "script"]
    text = page_text(page)
    assert f"Base config base{EVIL}.yaml" in text and f"0 of 1 {EVIL}" in text
    links = [attrs["href"] for tag, attrs in parse(page) if tag == "a"]
    assert links == [row["report"] for row in rows]
    assert "+10.0 ± " not in text and "+10.0" in text  # one seed: mean without a spread

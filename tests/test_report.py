"""report.html from a tiny real run: self-contained, verdict on top, figures, and a gallery whose
examples and neighbours are exactly those of samples.csv and the neighbours npz (joined on ids)."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from dejavu import pipeline
from dejavu.config import load_config
from dejavu.report.figures import FIGURES
from dejavu.report.html import gallery_section, read_samples
from dejavu.runs import Run, load_npz

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


def has_class(attrs: dict[str, str | None], name: str) -> bool:
    return name in (attrs.get("class") or "").split()


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    run = Run(tmp_path_factory.mktemp("report") / "run", load_config(None, TINY_REPORT))
    run.claim()
    pipeline.run_all(run, log=lambda _: None)
    return run, run.root / "report.html"


def expected_gallery(run: Run, samples: list[dict[str, str]]) -> list[str]:
    memorized = [r for r in samples if r["partition"] == "memorized"]
    memorized.sort(key=lambda r: (-float(r["target_confidence"]), r["id"]))
    return [r["id"] for r in memorized[: run.config.report.gallery]]


def test_report_is_self_contained_with_verdict_first(report_run: tuple[Run, Path]) -> None:
    run, path = report_run
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    verdict = json.loads((run.root / "metrics.json").read_text())["verdict"]
    assert html.escape(verdict) in text
    # The verdict is the first paragraph of the page, right under the title.
    assert text.index(html.escape(verdict)) < text.index("<h2")
    tags = parse(text)
    for tag, attrs in tags:
        for key in ("src", "href", "action", "data"):
            value = attrs.get(key) or ""
            assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, key, value[:80])
        assert tag not in ("script", "link", "iframe", "object", "embed")
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.I)
    images = [attrs for tag, attrs in tags if tag == "img"]
    assert images and all((a.get("src") or "").startswith("data:image/png;base64,") for a in images)


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

    shown = min(run.config.report.neighbours, run.config.attack.k)
    # Neighbour figures as rendered, per gallery item and row, to check the attributes match the page.
    rendered: list[dict[str, list[str]]] = []
    role = ""
    for tag, attrs in tags:
        if has_class(attrs, "gallery-item"):
            rendered.append({"target": [], "reference": []})
        elif has_class(attrs, "nb-row"):
            role = attrs["data-role"] or ""
        elif has_class(attrs, "nb"):
            rendered[-1][role].append(attrs["data-id"] or "")
    for item, drawn in zip(items, rendered):
        row = by_id[item["data-id"]]
        for role in ("target", "reference"):
            npz = load_npz(run.neighbours_dir / f"model_{row[f'{role}_model']}" / f"crops_{row['direction']}.npz")
            position = npz["ids"].tolist().index(row["id"])
            expected = npz["neighbour_ids"][position][:shown].tolist()
            assert json.loads(item[f"data-{role}-neighbour-ids"]) == expected
            assert drawn[role] == expected


def test_gallery_caps_at_its_size_and_says_when_empty(report_run: tuple[Run, Path]) -> None:
    run, _ = report_run
    table = pipeline.load_table(run)
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

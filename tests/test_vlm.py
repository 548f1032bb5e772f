"""The vision-language (CLIP) test: captioned data, the CLIP method, the statistics, the stage end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.stats import binomtest

from dejavu.cli import main
from dejavu.config import load_config
from dejavu.data.captioned import CELL_WORDS, CaptionedScenes
from dejavu.errors import ConfigError, RunFolderError
from dejavu.losses.clip import clip_loss
from dejavu.metrics.vlm import gap_summary, population_gap, precision_recall, predicted_objects, retrieval_recall
from dejavu.models.text import END, PAD, START, mask_tokens, tokenize
from dejavu.runs import Run
from dejavu.train import loop
from dejavu.metrics.outcomes import vlm_outcome
from tests.conftest import train_straight_and_interrupted

ROOT = Path(__file__).resolve().parents[1]
CLIP_SMOKE = ROOT / "configs" / "clip_smoke.yaml"


# Data -------------------------------------------------------------------------------------------------
def test_captioned_scenes_hold_several_objects_and_captions_never_name_them_all():
    ds = CaptionedScenes(n_classes=6, images_per_class=12, image_size=48, seed=3, objects=(2, 4), caption_objects=1)
    table = ds.table()
    again = CaptionedScenes(n_classes=6, images_per_class=12, image_size=48, seed=3, objects=(2, 4)).table()
    assert np.array_equal(table.images, again.images) and list(table.captions) == list(again.captions)
    counts = table.objects.sum(axis=1)
    assert counts.min() >= 2 and counts.max() <= 4 and len(set(counts.tolist())) > 1
    for i in range(len(table)):
        names = [str(table.class_names[c]) for c in np.flatnonzero(table.objects[i])]
        named = [name for name in table.class_names if f" {name} at the " in table.captions[i]]
        assert len(named) == 1 and named[0] in names, (table.captions[i], names)
        assert table.objects[i, table.labels[i]], "the image's label is one of its objects"
        assert len(table.boxes_of(i)) == counts[i]
        assert any(f"at the {cell}" in table.captions[i] for cell in CELL_WORDS)


def test_every_object_is_drawn_inside_its_box_in_its_colour():
    ds = CaptionedScenes(n_classes=5, images_per_class=4, image_size=64, seed=0, background_detail=False)
    for i in range(len(ds)):
        record, objects, _ = ds.render_captioned(i)
        classes = np.flatnonzero(objects)
        for box in record.boxes.astype(int):
            assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
        # Each object class's saturated colour is found inside some box of the image.
        for c in classes:
            colour = np.rint(ds.class_colour[c] * 255)
            near = (np.abs(record.image.astype(float) - colour).max(axis=2) < 3)
            inside = np.zeros_like(near)
            for x0, y0, x1, y1 in record.boxes.astype(int):
                inside[y0:y1, x0:x1] = True
            assert near.any() and not (near & ~inside).any()


def test_a_clip_config_on_data_without_captions_or_with_every_object_named_is_refused():
    with pytest.raises(ConfigError, match=r"'train.method' = clip trains on image-caption pairs.*data.dataset=captioned_scenes"):
        load_config(None, ["train.method=clip"])
    with pytest.raises(ConfigError, match=r"'data.objects_per_image' = \[2, 3\] and 'data.caption_objects' = 2"):
        load_config(CLIP_SMOKE, ["data.objects_per_image=[2,3]", "data.caption_objects=2"])
    with pytest.raises(ConfigError, match=r"'vlm.k' = 1000 is larger than the public set X"):
        load_config(CLIP_SMOKE, ["vlm.k=1000"])
    with pytest.raises(ConfigError, match=r"'train.clip.text_width' = 30 is not divisible"):
        load_config(CLIP_SMOKE, ["train.clip.text_width=30", "train.clip.text_heads=4"])


# Text and loss ----------------------------------------------------------------------------------------
def test_caption_masking_drops_only_word_tokens_and_keeps_their_order():
    tokens = torch.from_numpy(tokenize(["a beach scene with a large disc-0 at the top left"] * 64, 24))
    assert torch.equal(mask_tokens(tokens, 0.0), tokens)
    masked = mask_tokens(tokens, 0.5, torch.Generator().manual_seed(0))
    words = tokens[0][(tokens[0] != START) & (tokens[0] != END) & (tokens[0] != PAD)].tolist()
    lengths = []
    for row in masked:
        kept = row[row != PAD].tolist()
        assert kept[0] == START and kept[-1] == END
        inner = iter(words)
        assert all(token in inner for token in kept[1:-1]), "the kept words are a subsequence, in order"
        assert (row[len(kept):] == PAD).all()
        lengths.append(len(kept) - 2)
    # Each word is dropped with probability 1/2: about half of them remain on average.
    assert abs(np.mean(lengths) - len(words) / 2) < 1.5 and len(set(lengths)) > 2


def test_clip_loss_is_the_mean_of_both_directions_cross_entropies():
    torch.manual_seed(0)
    image, text, log_scale = torch.randn(6, 8), torch.randn(6, 8), torch.tensor(math.log(10.0))
    logits = 10.0 * F.normalize(image, dim=1) @ F.normalize(text, dim=1).T
    by_hand = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(clip_loss(image, text, log_scale=log_scale), by_hand, atol=1e-6)
    # The learnt scale is clamped at 100, as CLIP's.
    assert torch.allclose(clip_loss(image, text, log_scale=torch.tensor(9.0)),
                          clip_loss(image, text, log_scale=torch.tensor(math.log(100.0))))


@pytest.fixture(scope="module")
def pairs():
    table = CaptionedScenes(n_classes=5, images_per_class=20, image_size=32, seed=0).table()
    config = load_config(CLIP_SMOKE, ["train.epochs=40", "train.clip.caption_mask=0.2", "train.batch_size=50"]).train
    return table, config, tokenize(table.captions, config.clip.context_length)


def test_clip_learns_to_pair_its_training_captions_with_their_images(pairs, tmp_path):
    table, config, tokens = pairs
    out = loop.train_encoder(table.images, config, 32, seed=0, out_dir=tmp_path, data_fingerprint="p", labels=tokens)
    from dejavu.models.encoder import build_encoder
    from dejavu.models.text import build_text_encoder
    from dejavu.train.checkpoints import load_weights
    from dejavu.data.augment import eval_images

    encoder, text = build_encoder(config, 32), build_text_encoder(config.clip, 64)
    load_weights(out, encoder)
    load_weights(tmp_path / "text.safetensors", text)
    with torch.no_grad():
        images = F.normalize(encoder.eval()(eval_images(torch.from_numpy(table.images), 32)), dim=1).numpy()
        captions = F.normalize(text.eval()(torch.from_numpy(tokens)), dim=1).numpy()
    # 100 pairs: chance of the own image among the 5 nearest is 5 %.
    recall = retrieval_recall(captions, images, 5)
    assert recall > 0.3, recall
    loss = json.loads((tmp_path / "history.json").read_text())["loss"]
    assert loss[-1] < 0.75 * loss[0]


def test_clip_training_interrupted_resumes_to_the_same_image_and_text_weights(pairs, tmp_path, monkeypatch):
    """Caption masking draws from torch's RNG: the resume state must restore it with the text encoder."""
    table, config, tokens = pairs
    config = load_config(CLIP_SMOKE, ["train.epochs=4", "train.clip.caption_mask=0.3", "train.batch_size=50",
                                      "train.resume_every_s=0"]).train
    straight, killed = train_straight_and_interrupted(
        monkeypatch, tmp_path, images=table.images, config=config, input_size=32, seed=1, data_fingerprint="p",
        labels=tokens)
    for name in ("model", "text"):
        a, b = (load_file(str(run / f"{name}.safetensors")) for run in (straight, killed))
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# Statistics -------------------------------------------------------------------------------------------
def test_precision_recall_and_confidence_by_hand():
    # Record 0: neighbours hold {0}, {0, 1}, {2}; truth {0, 3}. Union {0, 1, 2}: precision 1/3, recall 1/2.
    neighbours = np.array([[[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]], bool)
    union, confidence = predicted_objects(neighbours)
    assert union.tolist() == [[True, True, True, False]]
    assert confidence.tolist() == pytest.approx([(2 / 3 + 1 / 3 + 1 / 3) / 3])
    precision, recall = precision_recall(union, np.array([[1, 0, 0, 1]], bool))
    assert precision.tolist() == pytest.approx([1 / 3]) and recall.tolist() == pytest.approx([0.5])


def test_gap_summary_counts_wins_and_losses_and_tests_them_with_the_sign_test():
    rng = np.random.default_rng(0)
    n = 200
    reference = rng.uniform(size=n)
    target = reference + np.where(rng.uniform(size=n) < 0.65, 0.1, -0.1) * (rng.uniform(size=n) < 0.8)
    direction = {"target_precision": target, "reference_precision": reference, "target_recall": target,
                 "reference_recall": reference, "target_confidence": rng.uniform(size=n)}
    out = gap_summary({"A": direction}, bootstrap=300, level=0.95, seed=0)
    wins, losses = int((target > reference).sum()), int((target < reference).sum())
    assert (out["ppg_wins"], out["ppg_losses"]) == (wins, losses)
    assert out["ppg"] == pytest.approx((wins - losses) / n) == population_gap(target, reference)
    assert out["ppg_p"] == pytest.approx(binomtest(wins, wins + losses, 0.5).pvalue)
    assert out["ppg_ci"][0] < out["ppg"] < out["ppg_ci"][1]
    # Mann-Whitney AUC by brute force over all pairs.
    pairs = target[:, None] - reference[None, :]
    assert out["recall_gap_auc"] == pytest.approx(((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / n ** 2)
    top = out["top"]["0.1"]
    chosen = np.argsort(-direction["target_confidence"], kind="stable")[:20]
    assert top["n"] == 20 and top["ppg"] == pytest.approx(population_gap(target[chosen], reference[chosen]))
    same = gap_summary({"A": {**direction, "target_precision": reference}}, bootstrap=50, level=0.95, seed=0)
    assert same["ppg"] == 0 and same["ppg_p"] == 1.0


def test_most_confident_fractions_count_records_tied_at_the_cut_fractionally():
    # 1,000 records: the 0.1 % cut takes 1 record, the 1 % cut 10. The 4 most confident records tie, and so
    # do the 8 after them (6 of them within the 1 % cut); the 10 % cut falls inside a block of 150 (90 of its slots taken). The expected gap
    # over every order of the tied block (enumerated where small) is what the rule reports; a row-order
    # tie-break would take row 0 alone at 0.1 %.
    from itertools import permutations
    n = 1000
    rng = np.random.default_rng(3)
    confidence = np.concatenate([np.full(4, 0.9), np.full(8, 0.8), rng.uniform(0.0, 0.7, n - 12)])
    confidence[50:200] = 0.75  # a tied block of 150 records straddling the 10 % cut (ranks 10 to 159)
    reference = np.zeros(n)
    target = reference + rng.choice([-0.5, 0.0, 0.5], size=n)
    target[:4] = [0.0, 0.5, 0.5, -0.5]  # signs 0, +, +, -: the row-order tie-break at 0.1 % takes the 0
    direction = {"target_precision": target, "reference_precision": reference, "target_recall": target,
                 "reference_recall": reference, "target_confidence": confidence}
    top = gap_summary({"A": direction}, bootstrap=20, level=0.95, seed=0)["top"]

    def expected(keep: int) -> float:
        # Rank by confidence; within the block tied at the cut, average over every order (by symmetry, over
        # which subset of the block fills the slots left: the mean of the block's signs times the slots).
        order = np.argsort(-confidence, kind="stable")
        cut = confidence[order[keep - 1]]
        above = order[confidence[order] > cut]
        block = order[confidence[order] == cut]
        signs = np.sign(target - reference)
        slots = keep - len(above)
        orders = list(permutations(range(len(block)))) if len(block) <= 8 else None
        if orders is not None:  # brute force over orders of a small block
            mean_block = np.mean([signs[block[list(o[:slots])]].sum() for o in orders])
        else:
            mean_block = signs[block].mean() * slots
        return float((signs[above].sum() + mean_block) / keep)

    assert top["0.001"]["n"] == 1 and top["0.001"]["prg"] == pytest.approx(expected(1)) == pytest.approx(0.25)
    assert top["0.01"]["n"] == 10 and top["0.01"]["ppg"] == pytest.approx(expected(10))
    assert top["0.1"]["n"] == 100 and top["0.1"]["prg"] == pytest.approx(expected(100))
    # Row order no longer matters: the same records shuffled give the same gaps.
    shuffle = rng.permutation(n)
    again = gap_summary({"A": {key: value[shuffle] for key, value in direction.items()}}, bootstrap=20,
                        level=0.95, seed=0)["top"]
    assert all(again[f]["prg"] == pytest.approx(top[f]["prg"]) for f in top)


def test_vote_confidence_ties_exactly_equal_entropies_and_keeps_different_ones_apart():
    from dejavu.attack.vote import confidence
    # Equal entropies from different counts (prod c^c equal: 2^98 3^48), and one vote's classes permuted.
    tied = confidence(np.array([[18, 12, 8, 8, 4], [12, 12, 12, 12, 2], [4, 8, 18, 8, 12]]))
    assert tied[0] == tied[1] == tied[2]
    # Every vote of k = 50 neighbours over 6 classes (up to the order of the classes, which changes nothing):
    # as many distinct values as distinct prod c^c.
    def shapes(left: int, largest: int, parts: int):
        if left == 0:
            yield ()
        elif parts:
            for first in range(min(left, largest), 0, -1):
                yield from ((first, *rest) for rest in shapes(left - first, first, parts - 1))
    votes = np.array([shape + (0,) * (6 - len(shape)) for shape in shapes(50, 50, 6)])
    values = confidence(votes)
    keys = [math.prod(int(c) ** int(c) for c in row if c) for row in votes.tolist()]
    assert len(np.unique(values)) == len(set(keys))
    # Rounding to 6 decimals would merge some of them.
    assert len(np.unique(values.round(6))) < len(set(keys))
    p = votes / 50
    with np.errstate(divide="ignore", invalid="ignore"):
        float_entropy = np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    assert np.abs(values - float_entropy).max() < 1e-12


def test_retrieval_recall_is_the_share_of_captions_finding_their_own_image():
    images = np.eye(4, dtype=np.float32)
    text = images[[0, 1, 3, 2]]  # captions 2 and 3 point at each other's image
    assert retrieval_recall(images, images, 1) == 1.0
    assert retrieval_recall(text, images, 1) == 0.5 and retrieval_recall(text, images, 2) == 1.0


# End to end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "run"
    code = main(["run", "--config", str(CLIP_SMOKE), "--out", str(out), "threads=1"])
    return out, code


@pytest.mark.slow
def test_clip_smoke_run_writes_the_vlm_metrics_records_and_report(clip_run):
    out, code = clip_run
    assert code in (0, 3, 4)
    vlm = json.loads((out / "metrics.json").read_text())["vlm"]
    keys = {"n", "ppg", "prg", "ppg_p", "prg_p", "recall_gap_auc"}
    assert keys <= set(vlm) and keys <= set(vlm["control"])
    assert vlm["n"] == 200 and vlm["control"]["n"] == 50 and vlm["k"] == 10
    assert all(-1 <= vlm[key] <= 1 for key in ("ppg", "prg")) and 0 <= vlm["ppg_p"] <= 1
    with open(out / "vlm" / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [sum(r["set"] == s for r in rows) for s in "ABT"] == [100, 100, 50]
    # Each row's precision and recall follow from the stored neighbours and the catalog's objects.
    neighbours = np.load(out / "vlm" / "neighbours.npz")
    catalog = np.load(out / "data" / "catalog.npz")
    where = {str(i): n for n, i in enumerate(catalog["ids"])}
    objects, public = catalog["objects"], np.array([where[str(i)] for i in neighbours["public_ids"]])
    for row in rows[:: 25]:
        at = int(np.flatnonzero(neighbours[f"ids_{row['set']}"] == row["id"])[0])
        predicted = objects[public[neighbours[f"neighbours_{row['set']}_{row['target_model']}"][at]]].any(axis=0)
        true = objects[where[row["id"]]]
        assert float(row["target_precision"]) == pytest.approx((predicted & true).sum() / predicted.sum(), abs=1e-5)
        assert float(row["target_recall"]) == pytest.approx((predicted & true).sum() / true.sum(), abs=1e-5)
    assert (out / "models" / "A" / "text.safetensors").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    # A CLIP run's headline is the vision-language test's; the image test's follows.
    assert "Vision-language test (CLIP)" in html and html.index('id="outcome-vlm"') < html.index('id="outcome-image"')
    assert list(json.loads((out / "metrics.json").read_text())["outcomes"]) == ["vlm", "image"]


@pytest.mark.slow
def test_the_vlm_stage_refuses_a_damaged_summary_naming_the_file(clip_run):
    out, _ = clip_run
    from dejavu.artifacts import load_vlm_summary

    path = out / "vlm" / "summary.json"
    saved = path.read_text()
    try:
        payload = json.loads(saved)
        del payload["prg_p"]
        path.write_text(json.dumps(payload))
        with pytest.raises(RunFolderError, match=r"summary.json: missing key 'prg_p'"):
            load_vlm_summary(Run(out, load_config(CLIP_SMOKE)))
    finally:
        path.write_text(saved)


# COCO captions -----------------------------------------------------------------------------------------
def _coco_with_captions(tmp_path: Path, captions: object) -> tuple[Path, Path]:
    from tests.test_readers import _write_image

    for name in ("a", "b", "c"):
        _write_image(tmp_path / "images" / f"{name}.jpg", 48, 40)
    instances = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}, {"id": 9, "file_name": "c.jpg"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 20, 20]},
                        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [22, 5, 10, 10]},
                        {"id": 3, "image_id": 8, "category_id": 2, "bbox": [1, 1, 30, 30]},
                        {"id": 4, "image_id": 9, "category_id": 1, "bbox": [1, 1, 30, 30]}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    path = tmp_path / "captions.json"
    path.write_text(captions if isinstance(captions, str) else json.dumps(captions))
    return tmp_path / "instances.json", path


def test_coco_captions_give_each_image_its_first_caption_and_all_its_objects(tmp_path):
    from dejavu.data.catalog import ingest, read_entries

    instances, captions = _coco_with_captions(tmp_path, {"images": [], "annotations": [
        {"image_id": 7, "id": 1, "caption": "A cat  beside\\na dog."}, {"image_id": 7, "id": 2, "caption": "Two pets."},
        {"image_id": 8, "id": 3, "caption": "A dog on grass."}]})
    data = load_config(None, ["data.dataset=coco", f"data.root={tmp_path / 'images'}", f"data.annotations={instances}",
                              f"data.captions={captions}", "data.image_size=32", "data.workers=0"]).data
    with pytest.warns(UserWarning, match="skipped 1 images without a caption"):
        entries = read_entries(data)
    assert [(e.id, e.caption, e.objects) for e in entries] == [
        ("a", "A cat beside\\na dog.", ("cat", "dog")), ("b", "A dog on grass.", ("dog",))]
    table = ingest(entries, data, tmp_path / "data", log=lambda _: None)
    assert list(table.captions) == ["A cat beside\\na dog.", "A dog on grass."]
    assert table.objects.tolist() == [[True, True], [False, True]] and list(table.class_names) == ["cat", "dog"]


@pytest.mark.parametrize("captions, message", [
    ("{not json", r"captions.json: not valid JSON"),
    ([], r"captions.json: the top level is an array; expected an object with an 'annotations' list"),
    ({"annotations": [{"id": 1, "caption": "x"}]}, r"captions.json: annotations\[0\] has no 'image_id'"),
    ({"annotations": [{"image_id": 99, "caption": "x"}]}, r"annotations\[0\] has image_id 99, which is not an image"),
    ({"annotations": [{"image_id": 7, "caption": "  "}]}, r"annotations\[0\] \(image_id 7\) has caption '  '; expected a "
                                                          "non-empty text"),
    ({"annotations": [{"image_id": 7}]}, r"annotations\[0\] \(image_id 7\) has no 'caption'"),
])
def test_a_bad_captions_file_is_one_line_naming_the_file(tmp_path, captions, message):
    from dejavu.data.coco import read_coco
    from dejavu.errors import DataError

    instances, path = _coco_with_captions(tmp_path, captions)
    with pytest.raises(DataError, match=message) as info:
        read_coco(tmp_path / "images", instances, captions=path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DataError, match="the COCO captions file is missing"):
        read_coco(tmp_path / "images", instances, captions=tmp_path / "nothing.json")


# The text-only reference ------------------------------------------------------------------------------
def test_tfidf_captions_weigh_rare_words_over_common_ones():
    from dejavu.attack.text_reference import TfidfCaptions

    public = ["a red disc at the top", "a red square at the top", "a blue disc at the bottom", "a green ring"]
    index = TfidfCaptions(public)
    assert index.nearest(public, 1)[:, 0].tolist() == [0, 1, 2, 3]  # each caption finds itself first
    # "ring" is in one caption, "top" in two: the caption with the rare word comes first.
    assert index.nearest(["ring top"], 2).tolist() == [[3, 0]]
    # Smoothed idf of "red" (in 2 of 4 captions): ln(5 / 3) + 1.
    assert index.idf[index.index["red"]] == pytest.approx(math.log(5 / 3) + 1)
    vectors = index.vectors(["a red disc", "zebra"]).toarray()
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0) and not vectors[1].any()  # unknown words: empty


def test_excess_over_control_is_the_difference_of_mean_sign_scores():
    from scipy.stats import mannwhitneyu

    from dejavu.metrics.vlm import excess_over_control

    rng = np.random.default_rng(1)
    train, control = rng.choice([-1, 0, 1], 300, p=[0.2, 0.3, 0.5]), rng.choice([-1, 0, 1], 200)
    out = excess_over_control(train, control, 400, 0.95, 0)
    assert out["gap"] == pytest.approx(train.mean() - control.mean())
    assert out["p"] == pytest.approx(mannwhitneyu(train, control, alternative="two-sided").pvalue)
    assert out["ci"][0] < out["gap"] < out["ci"][1]


@pytest.mark.slow
def test_a_text_only_reference_tests_the_gap_beyond_the_control(clip_run, tmp_path):
    import shutil

    from dejavu.stages import run_stage

    out, _ = clip_run
    shutil.copytree(out, tmp_path / "run")
    run = Run(tmp_path / "run", load_config(CLIP_SMOKE, ["threads=1", "vlm.reference=text"]))
    run_stage(run, "vlm", log=lambda _: None)
    summary = json.loads((run.root / "vlm" / "summary.json").read_text())
    assert summary["reference"] == "text" and {"ppg", "ppg_p", "prg", "prg_p"} <= set(summary["excess"])
    with open(run.root / "vlm" / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["reference_model"] for r in rows} == {"text"}
    # The excess, by hand from the records: mean sign of (target - text) on A and B minus on T.
    for measure, name in (("precision", "ppg"), ("recall", "prg")):
        signs = {s: [np.sign(float(r[f"target_{measure}"]) - float(r[f"reference_{measure}"])) for r in rows
                     if (r["set"] == "T") == (s == "T")] for s in ("train", "T")}
        assert summary["excess"][name] == pytest.approx(np.mean(signs["train"]) - np.mean(signs["T"]), abs=1e-6)
    outcome = vlm_outcome({"vlm": summary, "ci_level": 0.95, "alpha": 0.01}, 0.01, 0.05)
    assert [(p.statistic, p.estimate) for p in outcome.parts] == [("excess_ppg", summary["excess"]["ppg"]),
                                                                   ("excess_prg", summary["excess"]["prg"])]
    assert outcome.decision == "no_verdict" or "PPG beyond the control's" in outcome.sentence


def test_a_manifest_with_captions_and_objects_gives_image_caption_pairs(tmp_path):
    from dejavu.data.catalog import ingest, read_entries
    from tests.test_readers import _write_image

    for name in ("a", "b", "c"):
        _write_image(tmp_path / f"{name}.jpg", 40, 40)
    (tmp_path / "m.csv").write_text('path,label,boxes,id,caption,objects\n'
                                    'a.jpg,cat,,,"A cat, asleep.",dog;cat\n'
                                    'b.jpg,dog,,,A dog.,\n'
                                    'c.jpg,dog,,,,\n')
    data = load_config(None, ["data.dataset=manifest", f"data.root={tmp_path / 'm.csv'}", "data.image_size=32",
                              "data.workers=0"]).data
    with pytest.warns(UserWarning, match="skipped 1 images without a caption"):
        entries = read_entries(data)
    assert [(e.id, e.caption, e.objects) for e in entries] == [("a", "A cat, asleep.", ("cat", "dog")),
                                                               ("b", "A dog.", ("dog",))]
    table = ingest(entries, data, tmp_path / "data", log=lambda _: None)
    assert table.objects.tolist() == [[True, True], [False, True]]
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.jpg", "label": "cat", "caption": "x", "objects": "dog"})
                                      + "\n" + json.dumps({"path": "b.jpg", "label": "dog", "caption": "y",
                                                           "objects": [3]}) + "\n")
    from dejavu.data.manifest import read_manifest
    from dejavu.errors import DataError

    with pytest.raises(DataError, match=r"m.jsonl:2: objects \[3\]; expected class names"):
        read_manifest(tmp_path / "m.jsonl")

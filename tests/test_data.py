import numpy as np
import pytest

from dejavu.data.crops import periphery_crop
from dejavu.data.scenes import ScenesDataset
from dejavu.data.splits import split_checks, split_ids
from dejavu.errors import DataError


def test_scenes_are_deterministic_per_seed():
    a, b = ScenesDataset(images_per_class=3, seed=5), ScenesDataset(images_per_class=3, seed=5)
    c = ScenesDataset(images_per_class=3, seed=6)
    for i in range(len(a)):
        assert np.array_equal(a[i].image, b[i].image) and np.array_equal(a[i].boxes, b[i].boxes)
    assert not np.array_equal(a[0].image, c[0].image)
    assert len({a[i].id for i in range(len(a))}) == len(a)


def test_box_is_the_tight_box_of_every_object_pixel():
    ds = ScenesDataset(images_per_class=10, seed=1)
    for i in range(len(ds)):
        record, mask, _ = ds.render(i)
        x0, y0, x1, y1 = record.boxes[0].astype(int)
        ys, xs = np.nonzero(mask)
        assert len(ys) > 0
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert record.label == i // 10 and record.image.dtype == np.uint8


def test_periphery_crop_contains_no_object_pixel():
    ds = ScenesDataset(images_per_class=20, seed=2)
    kept = 0
    for i in range(len(ds)):
        record, mask, _ = ds.render(i)
        crop = periphery_crop(record.boxes, 64, 64, 12)
        if crop.square is None:
            continue
        kept += 1
        x0, y0, x1, y1 = crop.rect
        assert not mask[y0:y1, x0:x1].any()
    assert kept > 0.8 * len(ds)


def test_scene_correlation_controls_how_often_the_scene_matches_the_class():
    n_classes, per_class = 10, 60
    for rho in (0.0, 0.5, 1.0):
        ds = ScenesDataset(n_classes=n_classes, images_per_class=per_class, seed=0, scene_correlation=rho)
        matches = np.mean([ds.render(i)[2] == i // per_class for i in range(len(ds))])
        expected = rho + (1 - rho) / n_classes
        assert abs(matches - expected) < 0.07


def test_background_detail_is_a_per_image_texture():
    def texture(ds, i):
        # Spatial variation within a background corner, per channel (scene colours removed).
        patch = ds[i].image[:8, :8].astype(float)
        return (patch - patch.mean(axis=(0, 1))).std(axis=(0, 1)).mean()

    ds = ScenesDataset(images_per_class=20, seed=0, scene_correlation=1.0)
    plain = ScenesDataset(images_per_class=20, seed=0, scene_correlation=1.0, background_detail=False)
    with_detail = np.mean([texture(ds, i) for i in range(len(ds)) if ds[i].boxes[0][1] >= 8])
    without = np.mean([texture(plain, i) for i in range(len(plain)) if plain[i].boxes[0][1] >= 8])
    assert with_detail > 3 * without


def _ids_labels(n_classes=4, per_class=30):
    labels = np.repeat(np.arange(n_classes), per_class)
    ids = np.array([f"img-{i:04d}" for i in range(len(labels))])
    return ids, labels


def test_split_is_disjoint_balanced_and_seeded():
    ids, labels = _ids_labels()
    sizes = {"A": 5, "B": 5, "X": 12, "T": 8}
    sets = split_ids(ids, labels, sizes, seed=3)
    checks = split_checks(sets, ids, labels)
    assert checks["ok"] and set(checks["pairwise_disjoint"].values()) == {0}
    for name, count in sizes.items():
        assert checks["per_class_counts"][name] == [count] * 4
    again = split_ids(ids, labels, sizes, seed=3)
    other = split_ids(ids, labels, sizes, seed=4)
    assert all(np.array_equal(sets[k], again[k]) for k in sets)
    assert not np.array_equal(sets["A"], other["A"])


def test_split_checks_catch_overlap():
    ids, labels = _ids_labels()
    sets = split_ids(ids, labels, {"A": 5, "B": 5, "X": 5, "T": 5}, seed=0)
    sets["B"] = np.concatenate([sets["B"], sets["A"][:1]])
    checks = split_checks(sets, ids, labels)
    assert not checks["ok"] and checks["pairwise_disjoint"]["A&B"] == 1


def test_split_refuses_classes_that_are_too_small():
    ids, labels = _ids_labels(per_class=10)
    with pytest.raises(DataError, match="class 0 has 10 images"):
        split_ids(ids, labels, {"A": 5, "B": 5, "X": 5, "T": 5}, seed=0)

"""The stages split -> train -> embed -> evaluate -> neighbours -> metrics -> report, chained by ``run_all``.

Each stage is ``stage_<name>(run) -> Path``: it reads only earlier stages' artifacts from the run
folder, writes its own atomically, and records a fingerprint of its inputs. ``run_all`` skips a
stage whose fingerprint matches, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dejavu.attack.embed import embed_batches
from dejavu.attack.neighbours import knn
from dejavu.config import Config, train_recipe
from dejavu.data.augment import eval_images
from dejavu.data.catalog import build_scenes, ingest, load_catalog, read_entries
from dejavu.data.crops import corner_crop, periphery_crop
from dejavu.data.leakage import duplicate_keep_mask, exact_duplicate_pairs, leakage_checks, near_duplicate_pairs
from dejavu.data.records import ImageTable, index_of_ids
from dejavu.data.sources import crop_batches, image_source
from dejavu.data.splits import SET_NAMES, paper_partition, resolve_scheme, split_checks, split_ids
from dejavu.errors import CheckpointError, DataError, RunFolderError
from dejavu.evaluate.conventional import NOTE, LayerStack, conventional_metrics, evaluation_layers
from dejavu.metrics.tables import attack_tables, summarise
from dejavu.models.encoder import build_encoder
from dejavu.runs import DEPENDS, Run, load_npz, read_json, save_npz, write_json, write_text
from dejavu.train import distributed
from dejavu.train.checkpoints import load_weights
from dejavu.train.loop import recipe_fingerprint, train_encoder

MODELS = ("A", "B")
# Query sets embedded as crops: the two attacked sets and the held-out control set.
CROP_SETS = ("A", "B", "T")


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def upstream_of(stages: list[str]) -> list[str]:
    """Every stage the given stages read, directly or not, in execution order (the stages excluded)."""
    needed: set[str] = set()
    frontier = list(stages)
    while frontier:
        for dep in DEPENDS[frontier.pop()]:
            if dep not in needed:
                needed.add(dep)
                frontier.append(dep)
    return [stage for stage in DEPENDS if stage in needed and stage not in stages]


def _own_config(run: Run, stage: str) -> str:
    c = run.config
    recipe = json.dumps(train_recipe(c.train), sort_keys=True)
    # The final epoch is the final weights: attack.epoch = train.epochs fingerprints as 0 does.
    epoch = () if c.attack.epoch in (0, c.train.epochs) else (c.attack.epoch,)
    own = {
        # How many processes decode is not part of what the data stage computes.
        "data": (_hash(sorted((k, str(v)) for k, v in c.to_dict()["data"].items() if k != "workers")), run.seeds["data"]),
        "split": (c.section_hash("split"), run.seeds["split"]),
        "crops": (c.section_hash("crop"),),
        "train_A": (recipe, c.data.input_size, run.seeds["train"], "A"),
        "train_B": (recipe, c.data.input_size, run.seeds["train"], "B"),
        # attack.epoch joins only when set, so runs made before the key keep their fingerprints.
        "embed": (c.attack.layer, c.data.input_size, *epoch),
        "evaluate": (c.attack.layer, c.data.input_size, c.attack.backend, c.section_hash("evaluate"), *epoch),
        "neighbours": (c.attack.k,),
        "metrics": (c.section_hash("metrics"), run.seeds["control_split"], run.seeds["bootstrap"]),
        "report": (c.section_hash("report"),),
    }
    return _hash(*own[stage])


def fingerprints(run: Run) -> dict[str, str]:
    """Each stage's fingerprint: its own config plus the tokens of the runs of the stages it reads."""
    return {
        stage: _hash(_own_config(run, stage), *(run.token(dep) for dep in deps))
        for stage, deps in DEPENDS.items()
    }


# Data ----------------------------------------------------------------------------------------------
def load_table(run: Run, with_images: bool = True) -> ImageTable:
    return load_catalog(run.data_dir, with_images)


def stage_data(run: Run) -> Path:
    """The dataset as ``data/catalog.npz`` (+ the pixel cache ``data/images.npy``): generated or read from files."""
    d = run.config.data
    if d.dataset == "scenes":
        build_scenes(d, run.seeds["data"], run.data_dir)
    else:
        entries = read_entries(d)
        print(f"[data] {len(entries)} images in {len({e.label for e in entries})} classes, "
              f"{sum(len(e.boxes) > 0 for e in entries)} with boxes")
        ingest(entries, d, run.data_dir)
    return run.data_dir / "catalog.npz"


def _duplicate_pairs(table: ImageTable, max_distance: int) -> np.ndarray:
    pairs = [exact_duplicate_pairs(table.content_hashes)]
    if max_distance >= 0:
        pairs.append(near_duplicate_pairs(table.perceptual_hashes.astype(np.uint64), max_distance))
    return np.concatenate(pairs).reshape(-1, 2)


def stage_split(run: Run) -> Path:
    """Disjoint sets A/B/X/T (+ shared), leakage checks, in ``data/split.json``."""
    table = load_table(run, with_images=False)
    s, d = run.config.split, run.config.data
    scheme = resolve_scheme(s.scheme, d.dataset)
    usable = np.ones(len(table), dtype=bool)
    dropped: list[str] = []
    if s.drop_duplicates:
        usable = duplicate_keep_mask(table.ids, _duplicate_pairs(table, s.near_duplicate_distance))
        dropped = table.ids[~usable].tolist()
    ids, labels = table.ids[usable], table.labels[usable]
    if scheme == "paper":
        sets = paper_partition(ids, labels, table.boxed[usable], table.class_names, s.a_per_class,
                               s.public_from_per_class, s.x_per_class, s.t_per_class, run.seeds["split"])
        per_class = {"N": s.a_per_class, "public_from_N": s.public_from_per_class or s.a_per_class,
                     "X_cap": s.x_per_class, "T": s.t_per_class}
    else:
        per_class = {"A": s.a_per_class, "B": s.b_per_class, "X": s.x_per_class, "T": s.t_per_class}
        sets = split_ids(ids, labels, per_class, run.seeds["split"])
        sets["shared"] = np.array([], dtype=ids.dtype)
    checks = split_checks(sets, table.ids, table.labels)
    if not checks["ok"]:
        raise DataError(f"split failed its checks: {checks}")
    if run.config.attack.k > len(sets["X"]):
        raise DataError(
            f"config key 'attack.k' = {run.config.attack.k} is larger than the public set X ({len(sets['X'])} images "
            "after the split); lower attack.k or raise split.x_per_class"
        )
    groups = np.full(len(table), "", dtype=object)
    for name, members in sets.items():
        groups[index_of_ids(table.ids, members, f"split set {name}")] = name
    leakage = leakage_checks(table.ids, groups.astype(str), table.content_hashes,
                             table.perceptual_hashes.astype(np.uint64), s.near_duplicate_distance)
    leakage["dropped_before_split"] = len(dropped)
    leakage["allowed"] = bool(s.allow_leakage)
    # The built-in scenes share each class's shape and scene at the 8 x 8 DCT scale of the perceptual
    # hash, so it flags hundreds of pairs of different images: there, near pairs are reported, not blocking.
    leakage["near"]["blocking"] = d.dataset != "scenes"
    leakage["ok"] = not leakage["exact"]["pairs"] and not (leakage["near"]["blocking"] and leakage["near"]["pairs"])
    if not leakage["ok"] and not s.allow_leakage:
        examples = leakage["exact"]["examples"][:3] + leakage["near"]["examples"][:3]
        raise DataError(
            f"leakage check failed: {leakage['exact']['pairs']} exact and {leakage['near']['pairs']} near-duplicate "
            f"pair(s) cross two sets (by set pair: exact {leakage['exact']['by_groups']}, near "
            f"{leakage['near']['by_groups']}; e.g. {examples}). Expected no image in two sets: re-run with "
            "split.drop_duplicates=true to keep one image per duplicate cluster, or split.allow_leakage=true to "
            "proceed anyway (the report will say so)"
        )
    canaries = choose_canaries(table, sets["A"], s.canaries, run.seeds["split"])
    path = run.data_dir / "split.json"
    write_json(path, {
        "seed": run.seeds["split"],
        "scheme": scheme,
        "per_class": per_class,
        "sizes": {name: len(members) for name, members in sets.items()},
        "checks": checks,
        "leakage": leakage,
        "dropped_duplicates": dropped,
        "sets": {name: members.tolist() for name, members in sets.items()},
        "canaries": canaries.tolist(),
        "canary_repeats": s.canary_repeats,
    })
    return path


def choose_canaries(table: ImageTable, a_ids: np.ndarray, count: int, split_seed: int) -> np.ndarray:
    """``count`` ids (sorted) drawn among A's boxed images: the canaries (``split.canaries``).

    Drawn after the split by a generator of its own (derived from the split seed), so A, B, X and T are
    the same with and without canaries."""
    if count == 0:
        return np.array([], dtype=table.ids.dtype)
    a_ids = np.sort(a_ids)
    boxed = a_ids[table.boxed[index_of_ids(table.ids, a_ids, "split set A")]]
    if count > len(boxed):
        raise DataError(
            f"config key 'split.canaries' = {count} is larger than the number of A's images with boxes "
            f"({len(boxed)} of {len(a_ids)}): lower split.canaries"
        )
    rng = np.random.default_rng([split_seed, 0xCA4A])
    return np.sort(rng.choice(boxed, size=count, replace=False))


def load_split(run: Run) -> dict[str, np.ndarray]:
    """The split's id arrays: A, B, X, T and ``shared`` (empty for the balanced scheme)."""
    payload = read_json(run.data_dir / "split.json")
    sets = {name: np.array(payload["sets"][name]) for name in SET_NAMES}
    sets["shared"] = np.array(payload["sets"].get("shared", []), dtype=sets["A"].dtype)
    return sets


def load_canaries(run: Run) -> tuple[np.ndarray, int]:
    """The canary ids (empty when off, or for a split written before canaries existed) and their repeats."""
    payload = read_json(run.data_dir / "split.json")
    return np.array(payload.get("canaries", []), dtype=str), int(payload.get("canary_repeats", 1))


CROP_COLUMNS = ("id", "set", "label", "width", "height", "n_boxes", "kept", "reason", "short_side",
                "rect_x0", "rect_y0", "rect_x1", "rect_y1", "square_x0", "square_y0", "square_x1", "square_y1",
                "overlaps_box")


def stage_crops(run: Run) -> Path:
    """Periphery (or corner) crops of every image of A, B and T into ``data/crops.csv`` (skips with reasons).

    Coordinates are full-resolution pixels of each image."""
    table = load_table(run, with_images=False)
    sets = load_split(run)
    c = run.config.crop
    rows = []
    for name in CROP_SETS:
        positions = index_of_ids(table.ids, sets[name], f"split set {name}")
        for position in positions:
            boxes = table.boxes_of(position)
            width, height = (int(v) for v in table.sizes[position])
            if c.mode == "corner":
                crop = corner_crop(boxes, width, height, c.corner_fraction)
            else:
                crop = periphery_crop(boxes, width, height, c.min_side_px, rule=c.rule)
            rect = crop.rect or (-1, -1, -1, -1)
            square = crop.square or (-1, -1, -1, -1)
            rows.append([str(table.ids[position]), name, int(table.labels[position]), width, height, len(boxes),
                         int(crop.square is not None), crop.reason, crop.short_side, *rect, *square,
                         int(crop.overlaps_box)])
    for name in ("A", "B"):
        if not any(row[1] == name and row[6] for row in rows):
            raise DataError(
                f"no periphery crop of set {name} has a shortest side >= crop.min_side_px = "
                f"{run.config.crop.min_side_px} px; lower crop.min_side_px or data.object_scale"
            )
    path = run.data_dir / "crops.csv"
    _write_csv(path, CROP_COLUMNS, rows)
    return path


def load_crops(run: Run) -> dict[str, np.ndarray]:
    """``data/crops.csv`` as columns (ids as str, numbers as int)."""
    path = run.data_dir / "crops.csv"
    if not path.is_file():
        raise RunFolderError(f"artifact '{path}' is missing: run the crops stage first")
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    columns: dict[str, np.ndarray] = {}
    for name in CROP_COLUMNS:
        values = [r[name] for r in records]
        columns[name] = np.array(values) if name in ("id", "set", "reason") else np.array(values, dtype=np.int64)
    return columns


def kept_crops(run: Run, set_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids (sorted) and int (N, 4) crop squares of the kept crops of one set."""
    crops = load_crops(run)
    keep = (crops["set"] == set_name) & (crops["kept"] == 1)
    ids = crops["id"][keep]
    squares = np.stack([crops[f"square_{k}"][keep] for k in ("x0", "y0", "x1", "y1")], axis=1)
    order = np.argsort(ids, kind="stable")
    return ids[order], squares[order].reshape(-1, 4)


# Training ------------------------------------------------------------------------------------------
def stage_train(run: Run, model: str) -> Path:
    """Train the model of set ``model`` (A: target, B: reference) on its set plus the shared set."""
    table = load_table(run)
    sets = load_split(run)
    canaries, repeats = load_canaries(run)
    rows = training_rows(table, sets, model, canaries, repeats)
    c = run.config
    return train_encoder(
        image_source(table, rows, c.data.image_size, c.data.workers), c.train, c.data.input_size, run.seeds["train"], run.model_dir(model),
        data_fingerprint=fingerprints(run)[f"train_{model}"],
        description=f"train {model} ({'target' if model == 'A' else 'reference'})",
        labels=table.labels[rows], n_classes=len(table.class_names),
    )


def own_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str) -> np.ndarray:
    """Table rows of model ``model``'s training set: its set plus the shared set, each image once."""
    return index_of_ids(table.ids, np.concatenate([sets[model], sets["shared"]]), f"split set {model}")


def training_rows(table: ImageTable, sets: dict[str, np.ndarray], model: str, canaries: np.ndarray,
                  repeats: int) -> np.ndarray:
    """Table rows model ``model`` trains on: its set plus the shared set; for model A, each canary's row is
    appended ``repeats - 1`` more times (so an epoch shows it ``repeats`` times). Model B: no canaries."""
    rows = own_rows(table, sets, model)
    if model != "A" or len(canaries) == 0 or repeats <= 1:
        return rows
    extra = index_of_ids(table.ids, np.asarray(canaries), "canaries")
    if not np.isin(extra, rows).all():
        raise DataError("split.json lists canaries that are not in set A; re-run the split stage")
    return np.concatenate([rows, np.tile(extra, repeats - 1)])


def weights_path(run: Run, model: str) -> Path:
    """The weights audited (``attack.epoch``): the final ones, or the checkpoint kept after that epoch."""
    epoch, final = run.config.attack.epoch, run.config.train.epochs
    if not epoch or epoch == final:
        return run.model_dir(model) / "model.safetensors"
    path = run.model_dir(model) / "checkpoints" / f"epoch_{epoch:05d}.safetensors"
    if not path.is_file():
        kept = sorted(int(p.stem.split("_")[1]) for p in path.parent.glob("epoch_*.safetensors"))
        held = f"weights after epochs {kept} and the final ones" if kept else "only the final weights"
        raise CheckpointError(
            f"config key 'attack.epoch' = {epoch}, but '{path.parent}' holds {held} (epoch {final}): the "
            f"checkpoint was deleted or never written. Choose one of those, or train again: dejavu train "
            f"--model {model} --out {run.root}"
        )
    return path


def load_encoder(run: Run, model: str) -> torch.nn.Module:
    encoder = build_encoder(run.config.train, run.config.data.input_size)
    c = run.config
    expected = recipe_fingerprint(c.train, c.data.input_size, run.seeds["train"], fingerprints(run)[f"train_{model}"])
    load_weights(weights_path(run, model), encoder, {"recipe": expected["recipe"], "data": expected["data"]})
    encoder.eval()
    return encoder


# Attack --------------------------------------------------------------------------------------------
def stage_embed(run: Run) -> Path:
    """Embed X's full images and the kept crops of A, B, T with both models (fp16 on disk).

    Each batch is read (or decoded) once and embedded by both models."""
    table = load_table(run)
    sets = load_split(run)
    c = run.config
    encoders = {model: load_encoder(run, model) for model in MODELS}
    batch = c.attack.batch_size
    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    source = image_source(table, public_rows, c.data.image_size, c.data.workers)
    chunks = [np.arange(start, min(start + batch, len(public_rows))) for start in range(0, len(public_rows), batch)]
    device = distributed.device()
    public = embed_batches(encoders, (eval_images(images, c.data.input_size) for images in source.batches(chunks)),
                           c.attack.layer, device)
    for model in MODELS:
        save_npz(run.embeddings_dir / f"model_{model}" / "public_X.npz", ids=table.ids[public_rows],
                 labels=table.labels[public_rows], embeddings=public[model].astype(np.float16))
    for name in CROP_SETS:
        ids, squares = kept_crops(run, name)
        rows = index_of_ids(table.ids, ids, f"crops of {name}")
        crops = embed_batches(encoders, crop_batches(table, rows, squares, c.data.input_size, batch, c.data.workers),
                              c.attack.layer, device)
        for model in MODELS:
            save_npz(run.embeddings_dir / f"model_{model}" / f"crops_{name}.npz", ids=ids,
                     embeddings=crops[model].astype(np.float16))
    return run.embeddings_dir


def stage_evaluate(run: Run) -> Path:
    """Conventional metrics of each model on full images, at the backbone and the attack's layer:
    kNN accuracy (database X) and a linear probe (fitted on the model's own training set), each on the
    model's training images ("train") and on T ("test"), in ``evaluation.json``.

    A model's training set is the one it trained on (its set plus the shared set). Each batch is read
    once and embedded at every layer in one forward pass."""
    table = load_table(run)
    sets = load_split(run)
    c = run.config
    layers = evaluation_layers(c.attack.layer)
    stacks = {model: LayerStack(load_encoder(run, model), layers) for model in MODELS}
    device = distributed.device()

    def embed(models: tuple[str, ...], rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """{model: {layer: (N, D)}} of the full images at ``rows``."""
        source = image_source(table, rows, c.data.image_size, c.data.workers)
        batch = c.attack.batch_size
        chunks = [np.arange(start, min(start + batch, len(rows))) for start in range(0, len(rows), batch)]
        stacked = embed_batches({model: stacks[model] for model in models},
                                (eval_images(images, c.data.input_size) for images in source.batches(chunks)),
                                stacks[models[0]].key, device)
        return {model: stacks[model].split(stacked[model]) for model in models}

    public_rows = index_of_ids(table.ids, sets["X"], "split set X")
    test_rows = index_of_ids(table.ids, sets["T"], "split set T")
    public, test = embed(MODELS, public_rows), embed(MODELS, test_rows)
    k = min(c.evaluate.knn_k, len(public_rows))
    models, sizes = {}, {"X": len(public_rows), "T": len(test_rows)}
    for model in MODELS:
        train_rows = own_rows(table, sets, model)
        sizes[model] = len(train_rows)
        train = embed((model,), train_rows)[model]
        models[model] = {
            layer: conventional_metrics(
                public[model][layer], table.labels[public_rows], train[layer], table.labels[train_rows],
                test[model][layer], table.labels[test_rows], n_classes=len(table.class_names), k=k,
                probe_epochs=c.evaluate.probe_epochs, backend=c.attack.backend, seed=run.seeds["train"],
                device=device,
            )
            for layer in layers
        }
    path = run.root / "evaluation.json"
    write_json(path, {"k": k, "attack_layer": c.attack.layer, "layers": layers, "sizes": sizes,
                      "models": models, "note": NOTE})
    return path


def stage_neighbours(run: Run) -> Path:
    """Exact k nearest public neighbours of every crop, in each model's own embedding space."""
    c = run.config
    for model in MODELS:
        public = load_npz(run.embeddings_dir / f"model_{model}" / "public_X.npz")
        for name in CROP_SETS:
            crops = load_npz(run.embeddings_dir / f"model_{model}" / f"crops_{name}.npz")
            distances, rows = knn(crops["embeddings"].astype(np.float32), public["embeddings"].astype(np.float32),
                                  c.attack.k, c.attack.backend)
            save_npz(run.neighbours_dir / f"model_{model}" / f"crops_{name}.npz",
                     ids=crops["ids"], neighbour_ids=public["ids"][rows],
                     neighbour_labels=public["labels"][rows], distances=distances)
    return run.neighbours_dir


def stage_metrics(run: Run) -> Path:
    """Per-example tables and pooled statistics: ``samples.csv``, ``control_samples.csv``, ``metrics.json``."""
    table = load_table(run, with_images=False)
    c = run.config
    neighbours = {
        (model, name): load_npz(run.neighbours_dir / f"model_{model}" / f"crops_{name}.npz")
        for model in MODELS for name in CROP_SETS
    }
    crops = load_crops(run)
    tables = attack_tables(table, crops, neighbours, n_classes=len(table.class_names),
                           control_seed=run.seeds["control_split"])
    canaries, repeats = load_canaries(run)
    metrics = summarise(tables, c.metrics, run.seeds["bootstrap"], table.class_names, canaries, repeats)
    metrics["split_sizes"] = read_json(run.data_dir / "split.json")["sizes"]
    metrics["crops_skipped"] = {
        name: int(np.sum((crops["set"] == name) & (crops["kept"] == 0))) for name in CROP_SETS
    }
    for name, columns in (("samples.csv", tables["attack"]), ("control_samples.csv", tables["control"])):
        _write_csv(run.root / name, list(columns), list(zip(*columns.values())))
    path = run.root / "metrics.json"
    write_json(path, metrics)
    return path


def stage_report(run: Run) -> Path:
    from dejavu.report.html import write_report

    return write_report(run)


# Chaining ------------------------------------------------------------------------------------------
def stage_functions() -> dict[str, Callable[[Run], Path]]:
    """Stage name -> function, in execution order (the order of ``runs.STAGES``)."""
    return {
        "data": stage_data,
        "split": stage_split,
        "crops": stage_crops,
        "train_A": lambda run: stage_train(run, "A"),
        "train_B": lambda run: stage_train(run, "B"),
        "embed": stage_embed,
        "evaluate": stage_evaluate,
        "neighbours": stage_neighbours,
        "metrics": stage_metrics,
        "report": stage_report,
    }


def set_threads(config: Config) -> None:
    # Processes of a distributed CPU run share the cores (on GPUs they hardly use them, and rank zero runs
    # the other stages alone, so it keeps them all).
    per_node = 1 if torch.cuda.is_available() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = config.threads or max(1, (os.cpu_count() or 1) // per_node)
    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


TRAINING_STAGES = ("train_A", "train_B")


def run_stage(run: Run, name: str, force: bool = False, log: Callable[[str], None] = print) -> Path | None:
    """Run one stage unless its fingerprint says it is already done (``force`` re-runs it).

    In a distributed run every process trains; the other stages run on rank zero while the rest
    wait (and fail with it if it fails). Rank zero decides what is done and alone writes markers.
    """
    prints = fingerprints(run)
    if not force and distributed.broadcast_flag(run.is_done(name, prints[name])):
        if distributed.is_main():
            log(f"[{name}] up to date, skipped")
        distributed.barrier()
        return None

    def work() -> Path:
        start = time.perf_counter()
        path = stage_functions()[name](run)
        elapsed = time.perf_counter() - start
        if distributed.is_main():
            artifact = Path(path).resolve().relative_to(run.root.resolve())
            run.mark_done(name, prints[name], seconds=round(elapsed, 3), artifact=str(artifact))
            log(f"[{name}] done in {elapsed:.1f} s -> {path}")
        return path

    path = work() if name in TRAINING_STAGES else distributed.on_rank_zero(work, f"stage {name}")
    distributed.barrier()
    return path


def run_all(run: Run, log: Callable[[str], None] = print) -> dict[str, float]:
    """Every stage in order; returns wall seconds per stage run now."""
    set_threads(run.config)
    times = {}
    for name in stage_functions():
        start = time.perf_counter()
        run_stage(run, name, log=log)
        times[name] = time.perf_counter() - start
    return times


def _write_csv(path: Path, columns, rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())

"""``data/catalog.npz`` and ``data/images.npy`` read back and checked against each other."""

from __future__ import annotations

from pathlib import Path


from dejavu.artifacts.files import NPZ_ERRORS, check_arrays, check_unique, count, examples, read_npz, redo, refuse
from dejavu.data.catalog import load_catalog
from dejavu.data.records import ImageTable
from dejavu.errors import RunFolderError
from dejavu.runs import Run

# Catalogs of older versions lack the optional arrays; ImageTable fills them in.
CATALOG_ARRAYS = {"ids": (("N",), "U"), "labels": (("N",), "iu"), "boxes": (("N", "M", 4), "f"),
                  "class_names": (("C",), "U")}
CATALOG_OPTIONAL = {"sizes": (("N", 2), "iu"), "paths": (("N",), "U"), "content_hashes": (("N",), "U"),
                    "perceptual_hashes": (("N",), "iu"), "objects": (("N", "C"), "b"), "captions": (("N",), "U")}


# Catalog -----------------------------------------------------------------------------------------
def load_table(run: Run, with_images: bool = True) -> ImageTable:
    """The catalog of ``data/`` (with its memory-mapped pixel cache unless ``with_images=False``), checked:
    arrays of one length, unique ids, labels within the class names, positive image sizes."""
    path, advice = run.data_dir / "catalog.npz", redo(run.root, "data")
    try:
        table = load_catalog(run.data_dir, with_images)
    except (RunFolderError, TypeError, *NPZ_ERRORS) as exc:
        # Read again only on failure, to say what is wrong with the catalog (a missing or unknown array
        # reaches ImageTable as a TypeError); when the catalog reads, what failed is the pixel cache.
        read_npz(path, tuple(CATALOG_ARRAYS), advice, tuple(CATALOG_OPTIONAL))
        if not isinstance(exc, NPZ_ERRORS):
            raise
        raise refuse(run.data_dir / "images.npy", "is damaged (truncated or not a numpy array)",
                     "the pixel cache the data stage writes", advice) from None
    check_catalog(table, path, advice)
    return table


def check_catalog(table: ImageTable, path: Path, advice: str) -> None:
    """The catalog's arrays agree: one entry per image in each, unique ids, labels that name a class."""
    arrays = table.catalog_arrays()
    spec = {name: want for name, want in {**CATALOG_ARRAYS, **CATALOG_OPTIONAL}.items() if name in arrays}
    check_arrays(path, arrays, spec, advice)
    if len(table) == 0 or len(table.class_names) == 0:
        raise refuse(path, f"holds {len(table)} images of {len(table.class_names)} classes", "at least one of each",
                     advice)
    check_unique(path, table.ids, "ids", advice)
    bad = (table.labels < 0) | (table.labels >= len(table.class_names))
    if bad.any():
        raise refuse(path, f"gives {count(int(bad.sum()), 'images')} a label outside the {len(table.class_names)} "
                           f"class names (e.g. {examples(table.ids[bad])}: {table.labels[bad][:3].tolist()})",
                     f"labels 0 to {len(table.class_names) - 1}", advice)
    if (table.sizes <= 0).any():
        raise refuse(path, f"gives image {str(table.ids[(table.sizes <= 0).any(axis=1)][0])!r} a size of 0 pixels",
                     "positive widths and heights", advice)

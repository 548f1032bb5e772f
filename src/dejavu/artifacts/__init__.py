"""Readers of a run folder's artifacts: the catalog, the split, the crops table, embeddings, neighbours.

The stages that write these files and the report that shows them both read them through here, so
neither imports the other (see the layers in ``pyproject.toml``'s import contract). Nothing read back is
trusted (``split.json`` edited to B = A once ran to "gap +0.0" while its stored checks said the sets were
disjoint): each reader re-checks what it returns and refuses with a one-line RunFolderError naming the file,
what was found, what was expected and the command that rewrites it (which also invalidates its readers).
One module per kind of file: :mod:`.files` (what they share), :mod:`.catalog`, :mod:`.split`, :mod:`.crops`,
:mod:`.models` (embeddings, neighbours, histories, sanity), :mod:`.reconstruction`, :mod:`.vlm`.
"""

from dejavu.artifacts.catalog import check_catalog, load_table
from dejavu.artifacts.crops import CROP_COLUMNS, kept_crops, load_crops
from dejavu.artifacts.files import (
    CLASSIFIER, CROP_SETS, MODELS, count, examples, models_of, query_sets_of, redo, refuse, write_csv,
)
from dejavu.artifacts.models import (
    load_classifier_summary, load_embeddings, load_history, load_neighbours, load_probabilities, load_sanity, load_source,
)
from dejavu.artifacts.reconstruction import (
    RECONSTRUCTION_COLUMNS, load_reconstruction_samples, load_reconstruction_summary, load_reconstructions,
)
from dejavu.artifacts.vlm import SAMPLE_COLUMNS as VLM_COLUMNS, load_vlm_neighbours, load_vlm_samples, load_vlm_summary
from dejavu.artifacts.split import Split, load_canaries, load_split, own_rows, read_split, training_rows

__all__ = [
    "CLASSIFIER", "CROP_COLUMNS", "RECONSTRUCTION_COLUMNS", "load_reconstruction_samples",
    "load_reconstruction_summary", "load_reconstructions", "CROP_SETS", "MODELS", "load_classifier_summary", "load_probabilities", "models_of",
    "query_sets_of", "Split", "check_catalog", "count", "examples", "kept_crops",
    "load_canaries", "load_crops", "load_embeddings", "load_history", "load_neighbours", "load_sanity", "load_source",
    "load_split", "load_table", "own_rows", "read_split", "redo", "refuse", "training_rows", "write_csv",
    "VLM_COLUMNS", "load_vlm_neighbours", "load_vlm_samples", "load_vlm_summary",
]

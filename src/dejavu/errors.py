"""Errors a user can cause. Each names the file or field, what was found and what was expected."""


class DejavuError(Exception):
    """Base class of every error the `dejavu` command reports without a traceback."""


class ConfigError(DejavuError):
    """A config key or value is unknown, mistyped or inconsistent."""


class DataError(DejavuError):
    """A dataset, split or crop cannot satisfy what the config asks for."""


class RunFolderError(DejavuError):
    """The output folder holds another run or a damaged artifact."""


class CheckpointError(DejavuError):
    """A checkpoint is missing, truncated, or belongs to another config."""


class ModelError(DejavuError):
    """A trained model is unfit to audit: its training diverged, its weights or embeddings are not finite."""

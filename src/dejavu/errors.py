"""Errors a user can cause. Each names the file or field, what was found and what was expected."""

import errno


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


class ResourceError(DejavuError):
    """The machine ran out of something a stage needs: memory, disk, permission to write."""


# What to do about the errors of the operating system a user meets (the rest: the system's own words).
OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or choose --out on another disk), then run the same command "
                  "again; finished stages are kept",
    errno.EDQUOT: "the disk quota is exceeded: free space, then run the same command again; finished stages are kept",
    errno.EROFS: "that file system is read-only: choose a writable --out",
    errno.EACCES: "permission denied: choose a folder you may write for --out, or fix the permissions",
    errno.EPERM: "operation not permitted: choose a folder you may write for --out, or fix the permissions",
    errno.ENOENT: "it does not exist",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "it is a folder where a file was expected",
}


def os_error_message(exc: OSError) -> str:
    """``OSError`` as one sentence: which file, what happened, what to do."""
    where = f" '{exc.filename}'" if exc.filename else ""
    if exc.filename2:
        where += f" -> '{exc.filename2}'"
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    advice = OS_ADVICE.get(exc.errno or -1, "")
    code = f" (errno {exc.errno})" if exc.errno is not None else ""
    return f"cannot use{where}: {reason}{code}" + (f"; {advice}" if advice else "")

"""Durable file writes: every file the library writes appears whole or not at all.

Each write goes to a temporary file beside the target, which is flushed and fsynced, renamed onto the
target, and then the folder is fsynced so that the rename itself survives a crash. A full disk or a
quota is reported as one `UpdownError` naming the file and the folder to free; the previous file, if
any, is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from updown_vqa.core.errors import UpdownError


def fsync_folder(folder: str) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: str, error: OSError, what: str = "it") -> UpdownError:
    """The one-line message for a write that failed (a full disk, a quota, a lost mount)."""
    folder = os.path.dirname(os.path.abspath(path))
    return UpdownError(f"{path}: cannot write {what} ({error.strerror or error}); nothing already written "
                       f"was changed. Free space in {folder}, then rerun the same command")


@contextlib.contextmanager
def atomic_path(path: str, what: str = "it") -> Iterator[str]:
    """A temporary path beside `path` for the block to write (h5py, torch.save); renamed onto `path`
    when the block succeeds, removed when it fails."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(folder, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(folder)
    except OSError as e:  # a full disk, a quota, a lost mount: the previous file is intact
        raise write_error(path, e, what) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", what: str = "it") -> Iterator:
    """An open file (text `w` or binary `wb`) whose contents replace `path` when the block succeeds."""
    with atomic_path(path, what) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def write_json(path: str, data, indent: int | None = None) -> None:
    """Write `data` as json, atomically, creating the folder."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=indent)

"""Durable file writes: every file the library writes appears whole or not at all.

Each write goes to a temporary file beside the target, which is flushed and fsynced, renamed onto the
target, and then the folder is fsynced so that the rename itself survives a crash. A full disk or a
quota is reported as one `UpdownError` naming the file and the folder to free; the previous file, if
any, is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
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
    reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]  # h5py's runs over lines
    if error.errno in NOT_WRITABLE:
        return UpdownError(f"{path}: cannot write {what} ({reason}); nothing already written was changed. "
                           f"{folder} is not writable by this user: point the command at a writable folder")
    return UpdownError(f"{path}: cannot write {what} ({reason}); nothing already written "
                       f"was changed. Free space in {folder}, then rerun the same command")


NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def not_writable(error: BaseException) -> UpdownError | None:
    """A read-only file system or a missing permission behind `error`, as one line naming the path."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NOT_WRITABLE and error.filename:
            return UpdownError(f"{error.filename}: {os.strerror(error.errno)}; this user cannot write (or "
                               "read) it: point the command at a folder it can use, or fix the permissions")
        error = error.__cause__ or error.__context__
    return None


def no_space(error: BaseException | None) -> OSError | None:
    """The ENOSPC (or EDQUOT) behind `error`, which torch's zip writer and h5py wrap in their own
    exceptions (`RuntimeError: ... unexpected pos`), found along the cause and context chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        text = str(error)
        if "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = error.__cause__ or error.__context__
    return None


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
    except (OSError, RuntimeError) as e:  # a full disk, a quota, a lost mount: the previous file is intact
        cause = e if isinstance(e, OSError) else no_space(e)  # torch.save wraps ENOSPC in a RuntimeError
        if cause is None:
            raise
        raise write_error(path, cause, what) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", what: str = "it") -> Iterator:
    """An open file (text `w` or binary `wb`) whose contents replace `path` when the block succeeds."""
    with atomic_path(path, what) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file or folder (through links too: os.path.samefile), or would."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting_inputs(key: str, out, inputs: dict) -> None:
    """An output can never destroy an input: `out` (named `key` to the user) must not be any of
    `inputs` ({what: path}, None paths skipped) nor the same file through a link."""
    if not out:
        return
    for what, path in inputs.items():
        for one in [path] if path is None or isinstance(path, (str, os.PathLike)) else list(path):
            if one and same_file(str(out), str(one)):
                raise UpdownError(f"{key}={out}: it is the {what} ({one}); writing it would destroy that "
                                  "input. Choose another output path")


def write_json(path: str, data, indent: int | None = None) -> None:
    """Write `data` as json, atomically, creating the folder."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=indent)

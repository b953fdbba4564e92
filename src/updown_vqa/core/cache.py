"""Json input and preprocessing caches: files named by a fingerprint of their inputs and settings, so a
cache is rebuilt whenever either changes and never silently reused when stale."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import atomic_write


def as_list(value) -> list[str]:
    """A config value that is one path or a list of paths, as a list ([] for None)."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def read_json(path: str):
    """The parsed json file, with errors that name the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UpdownError(f"{path}: file not found (check the data.* paths)") from None
    except (OSError, ValueError) as e:
        raise UpdownError(f"{path}: cannot read it as JSON ({e})") from None


IDENTITY_BLOCK = 1 << 20  # bytes hashed at each end of an input file


def file_identity(path: str) -> dict:
    """Path, size, mtime and sha1 of the first and last IDENTITY_BLOCK bytes of a file."""
    st = os.stat(path)
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        digest.update(f.read(IDENTITY_BLOCK))
        if st.st_size > IDENTITY_BLOCK:
            f.seek(max(IDENTITY_BLOCK, st.st_size - IDENTITY_BLOCK))
            digest.update(f.read(IDENTITY_BLOCK))
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ends_sha1": digest.hexdigest()[:16]}


_CONTENT_HASHES: dict[tuple, str] = {}  # (path, size, mtime, ctime, inode) -> sha1, for this process


def file_state(path: str) -> dict:
    """What changes whenever a file's content does: size, mtime, and ctime and inode, which no user can
    set back (an edit that restores the size and mtime still moves the ctime)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def files_digest(paths) -> str:
    """One hash of many files' names and `file_state`s (a stat each, no read): a folder of images whose
    files were added, removed, replaced or edited gets another digest."""
    states = sorted((os.path.abspath(p), *file_state(p).values()) for p in paths)
    return f"{len(states)} files, sha1 {hashlib.sha1(json.dumps(states).encode()).hexdigest()[:16]}"


def content_hash(path: str) -> dict:
    """`file_state` plus the sha1 of the whole file, read once per state in a process (an 18 GB store:
    about 70 s at the 0.26 GB/s measured on a shared 2-core machine; docs/reliability.md)."""
    state = file_state(path)
    key = (os.path.abspath(path), *state.values())
    if key not in _CONTENT_HASHES:
        with open(path, "rb") as f:
            _CONTENT_HASHES[key] = hashlib.file_digest(f, "sha1").hexdigest()[:16]
    return {**state, "sha1": _CONTENT_HASHES[key]}


def same_content(path: str, recorded: dict) -> bool:
    """Whether `path` still holds what `recorded` (a content_hash) describes: free when its state is
    unchanged; otherwise the whole file is hashed again (a copy or a touch that kept the content passes)."""
    if {k: recorded.get(k) for k in ("size", "mtime_ns", "ctime_ns", "inode")} == file_state(path):
        return True
    return content_hash(path)["sha1"] == recorded.get("sha1")


def fingerprint(files: Sequence[str], settings: dict, version: int = 1) -> str:
    """Hash of the input files' identity (path, size, mtime, a hash of their first and last MiB) and the
    settings that shape a cache: a cache is reused only for the same inputs."""
    stats = [file_identity(path) for path in files]
    blob = json.dumps([version, stats, settings], sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def save_cache(stem: str, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """`stem.npz` (arrays) then `stem.json` (metadata): the json, written last, marks a complete cache."""
    with atomic_write(stem + ".npz", "wb") as f:
        np.savez(f, **arrays)
    with atomic_write(stem + ".json") as f:
        json.dump(meta, f)
    return stem


def load_cache(stem: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and arrays written by `save_cache`."""
    with open(stem + ".json") as f:
        meta = json.load(f)
    with np.load(stem + ".npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays

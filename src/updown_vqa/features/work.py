"""What an unfinished store was being made from, so that a rerun resumes only onto the same inputs.

`STORE.work.inputs.json` (beside the writer's `STORE.work.h5`) records each input file's path, size,
modification time and a hash of its first and last blocks; a rerun with other inputs says what
changed and stops, unless told to start over.
"""

from __future__ import annotations

import json
import os
import shutil

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import write_json


def inputs_path(out: str) -> str:
    return f"{out}.work.inputs.json"


def check_inputs(out: str, inputs: dict, restart: bool, restart_flag: str) -> None:
    """Refuse to resume the unfinished store `out` onto other inputs; record them when starting.

    `inputs` maps a name (a file, a folder, a setting) to what identifies it; `restart_flag` is how to
    start over (`--restart`, `restart=true`)."""
    path, work = inputs_path(out), f"{out}.work.h5"
    if not restart and os.path.exists(work) and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        changed = [f"{k}: {_short(previous.get(k))} -> {_short(inputs.get(k))}"
                   for k in sorted(set(previous) | set(inputs)) if previous.get(k) != inputs.get(k)]
        if changed:
            raise UpdownError(f"{out}: the unfinished work in {work} was made from other inputs "
                              f"({'; '.join(changed)}); rerun with those inputs to resume, or pass "
                              f"{restart_flag} to start over from these")
    elif not restart and os.path.exists(work):  # an older version's work file: nothing recorded to compare
        return
    write_json(path, inputs, indent=1)


def check_space(out: str, store_bytes: int, restart: bool, fix: str) -> None:
    """Refuse up front a store of about `store_bytes` that the disk could not hold: its work file and
    the final sorted copy exist together until the copy is renamed, less what an unfinished work file
    already holds. (A disk that fills anyway still stops with the work kept, and a rerun resumes.)"""
    folder = os.path.dirname(os.path.abspath(out))
    work = f"{out}.work.h5"
    done = os.path.getsize(work) if os.path.exists(work) and not restart else 0
    needed, free = 2 * store_bytes - done, free_bytes(folder)
    if needed > free:
        raise UpdownError(f"{out}: the store needs about {store_bytes / 1e9:.1f} GB, {needed / 1e9:.1f} GB more "
                          f"on the disk while its work file and final copy both exist, but {folder} has "
                          f"{free / 1e9:.1f} GB free; free space there, write --out/out= to a larger disk, "
                          f"or {fix}")


def free_bytes(folder: str) -> int:
    """Free space of the disk that holds `folder` (its nearest existing parent); UPDOWN_FREE_BYTES
    stands in for it where tests need a small disk."""
    if os.environ.get("UPDOWN_FREE_BYTES"):
        return int(os.environ["UPDOWN_FREE_BYTES"])
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def remove_inputs(out: str) -> None:
    """Forget the inputs once the store is finished (or when starting over)."""
    if os.path.exists(inputs_path(out)):
        os.remove(inputs_path(out))


def _short(value) -> str:
    if isinstance(value, dict) and "size" in value:
        return f"{value['path']} ({value['size']} bytes, sha1 {value['ends_sha1']})"
    return repr(value)

"""What an unfinished store was being made from, so that a rerun resumes only onto the same inputs.

`STORE.work.inputs.json` (beside the writer's `STORE.work.h5`) records each input file's path, size,
modification time and a hash of its first and last blocks; a rerun with other inputs says what
changed and stops, unless told to start over.
"""

from __future__ import annotations

import json
import os

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


def remove_inputs(out: str) -> None:
    """Forget the inputs once the store is finished (or when starting over)."""
    if os.path.exists(inputs_path(out)):
        os.remove(inputs_path(out))


def _short(value) -> str:
    if isinstance(value, dict) and "size" in value:
        return f"{value['path']} ({value['size']} bytes, sha1 {value['ends_sha1']})"
    return repr(value)

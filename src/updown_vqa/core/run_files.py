"""The files a run folder holds, readable without torch or Lightning (`report` reads run folders;
`core.resume` writes them)."""

from __future__ import annotations

import json

from updown_vqa.core.errors import UpdownError

FINISHED = "finished.json"
FAILED = "failed.json"  # in the run folder: a multirun job that ended with an error
CHECKPOINTS = "checkpoints"  # the default checkpoint.dirpath inside a run folder


def read_record(path: str) -> dict:
    """A run's json record (finished.json, failed.json); a corrupt one is one error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise UpdownError(f"{path}: corrupt ({e}); delete it and run the same command again: a finished "
                          "run resumes from its last checkpoint and writes its record anew") from None
    if not isinstance(record, dict):
        raise UpdownError(f"{path}: corrupt (not a json object); delete it and run the same command again")
    return record

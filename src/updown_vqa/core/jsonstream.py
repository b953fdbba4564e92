"""Streaming the items of one huge top-level JSON object (GQA's `{split}_all_questions.json`, 10 GB for
train) with memory bounded by the largest single value, never the whole file: ijson on its C backend
(yajl2_c; `ijson.backend` says which one runs), with our error contract."""

from __future__ import annotations

from collections.abc import Iterator

import ijson

from updown_vqa.core.errors import UpdownError

_WHITESPACE = b" \t\n\r"


def iter_object_items(path: str, buffer_size: int = 1 << 16) -> Iterator[tuple[str, object]]:
    """(key, value) of each item of the file's top-level object, in file order; numbers as json.load
    gives them (int, float); integers beyond 64 bits are refused."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below, also when the caller stops early)
    except OSError as e:
        raise UpdownError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    with file:
        first = file.read(4096).lstrip(_WHITESPACE)[:1]
        if first != b"{":
            _fail(path, f"it starts with {first.decode(errors='replace')!r}, not '{{'" if first else "it is empty")
        file.seek(0)
        try:
            yield from ijson.kvitems(file, "", use_float=True, buf_size=buffer_size)
        except ijson.JSONError as e:
            reason = e.args[0] if e.args else "invalid"
            reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            _fail(path, f"{reason.splitlines()[0]}, within its first {file.tell()} bytes")


def _fail(path: str, what: str):
    raise UpdownError(f"{path}: not a JSON object of items ({what}); use the file as distributed")

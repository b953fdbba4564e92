"""Streaming the items of one huge top-level JSON object (GQA's `{split}_all_questions.json`, 10 GB for
train) with memory bounded by the largest single value, never the whole file."""

from __future__ import annotations

import json
from collections.abc import Iterator

from updown_vqa.core.errors import UpdownError

_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


class _Buffer:
    """A window of the file's text that grows only as far as one value needs."""

    def __init__(self, path: str, chunk_chars: int):
        self.path, self.chunk_chars = path, chunk_chars
        self.file = open(path, encoding="utf-8")  # noqa: SIM115 (closed by iter_object_items)
        self.text, self.pos, self.consumed, self.eof = "", 0, 0, False

    def more(self) -> bool:
        """Read another chunk, dropping what was parsed; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.file.read(self.chunk_chars)
        self.consumed += self.pos
        self.text, self.pos = self.text[self.pos :] + chunk, 0
        self.eof = not chunk
        return bool(chunk)

    def skip_space(self) -> str:
        """The next non-space character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos : self.pos + 1]

    def expect(self, chars: str) -> str:
        found = self.skip_space()
        if not found or found not in chars:
            self.fail(f"expected one of {chars!r}, found {found!r}")
        self.pos += 1
        return found

    def value(self):
        """Decode the JSON value at the cursor, reading more of the file until it is complete."""
        self.skip_space()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof:  # a number cut at the window's end would parse short
                    self.pos = end
                    return value
            except json.JSONDecodeError as e:
                if self.eof:
                    self.fail(e.msg)
            self.more()

    def fail(self, what: str):
        raise UpdownError(f"{self.path}: not a JSON object of items at character {self.consumed + self.pos} "
                          f"({what}); use the file as distributed")


def iter_object_items(path: str, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """(key, value) of each item of the file's top-level object, in file order."""
    try:
        buffer = _Buffer(str(path), chunk_chars)
    except OSError as e:
        raise UpdownError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    with buffer.file:
        buffer.expect("{")
        if buffer.skip_space() == "}":
            return
        while True:
            key = buffer.value()
            if not isinstance(key, str):
                buffer.fail("a key that is not a string")
            buffer.expect(":")
            yield key, buffer.value()
            if buffer.expect(",}") == "}":
                return

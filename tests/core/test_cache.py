"""Caches are reused only for the same inputs: same path, size, mtime and contents at both ends."""

import os

from updown_vqa.core.cache import fingerprint


def test_a_file_rewritten_with_the_same_size_and_mtime_gets_a_new_fingerprint(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text('{"questions": [1, 2, 3]}')
    stat = os.stat(path)
    before = fingerprint([str(path)], {"k": 1})
    assert fingerprint([str(path)], {"k": 1}) == before  # stable
    path.write_text('{"questions": [1, 2, 4]}')  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old modification time
    assert fingerprint([str(path)], {"k": 1}) != before
    assert fingerprint([str(path)], {"k": 2}) != fingerprint([str(path)], {"k": 1})

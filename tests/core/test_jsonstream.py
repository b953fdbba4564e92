"""Streaming a top-level JSON object item by item: same items as json.load, bounded reads, clear errors."""

import json

import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.jsonstream import iter_object_items

ITEMS = {"0012": {"question": "Is it \"red\"? {no}", "answer": "yes", "entailed": ["0013"], "n": 1.5e3},
         "0013": {"question": "caf\u00e9 \\ } ,", "answer": "no", "entailed": [], "n": -7},
         "n9": [1, 2, {"a": None}], "x": 12345678901234567890, "y": "tail"}


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_items_equal_json_load_whatever_the_chunk_size(tmp_path, indent, chunk):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(ITEMS, indent=indent, ensure_ascii=False), encoding="utf-8")
    items = list(iter_object_items(str(path), chunk_chars=chunk))
    assert [k for k, _ in items] == list(ITEMS) and dict(items) == ITEMS


def test_an_empty_object_has_no_items(tmp_path):
    (tmp_path / "e.json").write_text(" { } ")
    assert list(iter_object_items(str(tmp_path / "e.json"))) == []


@pytest.mark.parametrize("text, where", [("[1, 2]", "character 0"), ('{"a": 1, "b": ', "character 14"),
                                         ('{"a": {"b": 1}', "character 14"), ('{"a" 1}', "character 5")])
def test_a_list_or_a_truncated_file_is_one_error_naming_the_file_and_place(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UpdownError, match=f"bad.json: not a JSON object of items at {where}"):
        list(iter_object_items(str(path), chunk_chars=3))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UpdownError, match="none.json: cannot read it"):
        list(iter_object_items(str(tmp_path / "none.json")))

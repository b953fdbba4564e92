"""Streaming a top-level JSON object item by item: same items as json.load, bounded reads, clear errors."""

import json

import ijson
import pytest

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.jsonstream import iter_object_items

ITEMS = {"0012": {"question": "Is it \"red\"? {no}", "answer": "yes", "entailed": ["0013"], "n": 1.5e3},
         "0013": {"question": "caf\u00e9 \\ } ,", "answer": "no", "entailed": [], "n": -7},
         "n9": [1, 2, {"a": None}], "x": 1234567890123456789, "f": 0.1, "y": "tail"}


def test_the_c_backend_parses():
    assert ijson.backend == "yajl2_c"  # the Python backends are 10-50x slower on GQA's files


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("buffer_size", [1, 7, 1 << 16])
def test_items_equal_json_load_whatever_the_buffer_size(tmp_path, indent, buffer_size):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(ITEMS, indent=indent, ensure_ascii=False), encoding="utf-8")
    items = list(iter_object_items(str(path), buffer_size=buffer_size))
    assert [k for k, _ in items] == list(ITEMS) and dict(items) == ITEMS
    assert [type(v) for _, v in items] == [type(v) for v in ITEMS.values()]
    assert type(dict(items)["0012"]["n"]) is float  # not Decimal: arithmetic on it works as on json.load's


def test_an_empty_object_has_no_items(tmp_path):
    (tmp_path / "e.json").write_text(" { } ")
    assert list(iter_object_items(str(tmp_path / "e.json"))) == []


@pytest.mark.parametrize("text, what", [
    ("[1, 2]", "it starts with '\\[', not '{'"), ("", "it is empty"),
    ('{"a": 1, "b": ', "parse error: premature EOF"), ('{"a": {"b": 1}', "parse error: premature EOF"),
    ('{"a" 1}', "parse error: object key and value must be separated by a colon"),
    ('{"a": 1} x', "parse error: trailing garbage"),
    ('{"a": 12345678901234567890}', "parse error: integer overflow"),
    ('{"a": "\udcff"}', "lexical error: invalid bytes in UTF8 string"),
])
def test_a_list_a_truncated_or_a_bad_file_is_one_error_naming_the_file(tmp_path, text, what):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(UpdownError, match=f"bad.json: not a JSON object of items \\({what}") as error:
        list(iter_object_items(str(path), buffer_size=3))
    assert "\n" not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UpdownError, match="none.json: cannot read it"):
        list(iter_object_items(str(tmp_path / "none.json")))

"""The one catalog parser (``streamrec.catalog``): what it accepts, what it refuses with file:line, the typed rows."""
import json

import pandas as pd
import pytest

from streamrec.catalog import catalog_frame, load_items
from streamrec.errors import UserError

ALIEN = {"item_id": "i1", "title": "Alien", "genres": ["Horror", "Sci-Fi"], "year": 1979, "duration_minutes": 117,
         "popularity": 0.9}
# year and popularity may be absent, duration_minutes null (unknown), genres empty
TOY_STORY = {"item_id": "i2", "title": "Toy Story", "genres": [], "duration_minutes": None}


def write(path, *lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_reads_records_by_id_skipping_blank_lines(tmp_path):
    items = load_items(write(tmp_path / "items.jsonl", ALIEN, "", "  ", TOY_STORY))
    assert items == {"i1": ALIEN, "i2": TOY_STORY}


def test_typed_rows_null_where_a_record_has_none(tmp_path):
    frame = catalog_frame(load_items(write(tmp_path / "items.jsonl", ALIEN, TOY_STORY)))
    assert list(frame.columns) == ["item_id", "title", "genres", "year", "duration_minutes", "popularity"]
    assert frame["genres"].tolist() == [["Horror", "Sci-Fi"], []]
    assert str(frame["year"].dtype) == "Int64" and frame["year"].iloc[0] == 1979 and pd.isna(frame["year"].iloc[1])
    assert frame["duration_minutes"].dtype == float and frame["duration_minutes"].isna().tolist() == [False, True]
    assert frame["popularity"].tolist()[0] == pytest.approx(0.9) and pd.isna(frame["popularity"].iloc[1])


def _drop(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not an item record: expected a JSON object"),
    (_drop(ALIEN, "title"), "lacks title"),
    (_drop(ALIEN, "duration_minutes"), "lacks duration_minutes"),
    ({"item_id": "m9", "genres": ["Drama"]}, "lacks title, duration_minutes"),
    ({**ALIEN, "item_id": 7}, "item_id must be a non-empty string, got 7"),
    ({**ALIEN, "item_id": ""}, "item_id must be a non-empty string"),
    ({**ALIEN, "title": None}, "title must be a string"),
    ({**ALIEN, "genres": "Animation|Comedy"}, "genres must be a list of strings, got 'Animation|Comedy'"),
    ({**ALIEN, "genres": ["Drama", 3]}, "genres must be a list of strings"),
    ({**ALIEN, "duration_minutes": 0}, "duration_minutes must be a number > 0 or null, got 0"),
    ({**ALIEN, "duration_minutes": "90"}, "duration_minutes must be a number > 0 or null"),
    ({**ALIEN, "year": 1979.5}, "year must be an integer or null, got 1979.5"),
    ({**ALIEN, "year": True}, "year must be an integer or null"),
    ({**ALIEN, "popularity": "high"}, "popularity must be a number or null, got 'high'"),
    ("{\"item_id\": \"i9\", \"title\": \"T\", \"genres\": [], \"duration_minutes\": NaN}", "duration_minutes must be"),
])
def test_a_bad_line_is_refused_naming_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "items.jsonl", TOY_STORY, line)
    with pytest.raises(UserError, match=r"items\.jsonl:2: ") as err:
        load_items(path)
    assert message in str(err.value)


def test_an_item_appears_once(tmp_path):
    with pytest.raises(UserError, match=r"items\.jsonl:2: item 'i1' appears twice"):
        load_items(write(tmp_path / "items.jsonl", ALIEN, ALIEN))


def test_an_empty_or_missing_catalog_is_refused(tmp_path):
    with pytest.raises(UserError, match="has no items"):
        load_items(write(tmp_path / "items.jsonl", ""))
    with pytest.raises(UserError, match=r"cannot read catalog .*absent\.jsonl: No such file"):
        load_items(tmp_path / "absent.jsonl")

import pytest

from components.ingest import IngestError, read_tweets, stage_files


def test_jsonl_rows_keep_id_text_label_and_line(tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text('{"id": 7, "rawContent": "hello", "label": "neutral", "lang": "en"}\n'
                      '\n'
                      '{"id": "8", "text": "second", "date": "2020-01-01"}\n')
    tweets, quarantined = read_tweets(source)
    assert tweets[["id", "raw_text", "line"]].values.tolist() == [
        ["7", "hello", 1], ["8", "second", 3]]
    assert tweets["label"].iloc[0] == "neutral" and tweets["label"].isna().iloc[1]
    assert quarantined.empty


def test_unusable_lines_are_quarantined_with_reason_file_and_line(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": 1, "rawContent": "fine"}\n'
                      'not json\n'
                      '{"id": 2, "rawContent": "   "}\n'
                      '[1, 2]\n')
    tweets, quarantined = read_tweets(source)
    assert tweets["id"].tolist() == ["1"]
    assert quarantined["line"].tolist() == [2, 3, 4]
    assert quarantined["reason"].str.split(":").str[0].tolist() == [
        "invalid JSON", "no tweet text", "record is not a JSON object"]
    assert set(quarantined["source_file"]) == {str(source.resolve())}


def test_csv_with_a_text_column_is_read_and_ragged_rows_quarantined(tmp_path):
    source = tmp_path / "t.csv"
    source.write_text('id,text,label\n1,"multi\nline tweet",positive\n2,ok,negative,extra\n')
    tweets, quarantined = read_tweets(source)
    assert tweets[["id", "raw_text", "label"]].values.tolist() == [
        ["1", "multi\nline tweet", "positive"]]
    assert quarantined["reason"].tolist() == ["row has more fields than the header"]


def test_rows_without_an_id_are_keyed_by_their_text(tmp_path):
    source = tmp_path / "t.csv"
    source.write_text("text\nsame words\nsame words\n")
    tweets, _ = read_tweets(source)
    assert tweets["id"].nunique() == 1
    assert tweets["id"].iloc[0].startswith("text-")


def test_missing_file_and_unknown_format_are_clear_errors(tmp_path):
    with pytest.raises(IngestError, match="not found"):
        read_tweets(tmp_path / "nope.jsonl")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(IngestError, match="unknown format"):
        read_tweets(tmp_path / "x.parquet")


def test_stage_files_combines_inputs_into_one_batch(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": 1, "rawContent": "one"}\n')
    b.write_text('{"id": 2, "rawContent": "two"}\nbroken\n')
    batch = stage_files([str(a), str(b)], tmp_path / "stage")
    assert (batch.rows, batch.quarantined) == (2, 1)


def test_a_lone_surrogate_is_quarantined_not_fatal(tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text('{"id": 1, "rawContent": "bad \\ud800 x"}\n{"id": 2, "rawContent": "ok"}\n')
    batch = stage_files([str(source)], tmp_path / "stage")
    assert (batch.rows, batch.quarantined) == (1, 1)


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_row(tmp_path):
    jsonl, csv_file = tmp_path / "bom.jsonl", tmp_path / "bom.csv"
    jsonl.write_bytes(b'\xef\xbb\xbf{"id": "1", "rawContent": "first"}\n')
    csv_file.write_bytes(b"\xef\xbb\xbfid,text\n2,second\n")
    for path, expected in ((jsonl, ["1", "first"]), (csv_file, ["2", "second"])):
        tweets, quarantined = read_tweets(path)
        assert tweets[["id", "raw_text"]].values.tolist() == [expected]
        assert quarantined.empty


def test_a_line_that_is_a_json_string_is_quarantined_as_not_an_object(tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text('"str"\n[1, 2]\n{"id": "1", "text": "ok"}\n')
    tweets, quarantined = read_tweets(source)
    assert tweets["id"].tolist() == ["1"]
    assert quarantined["reason"].tolist() == ["record is not a JSON object"] * 2

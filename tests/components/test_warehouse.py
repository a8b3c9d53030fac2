import pandas as pd
import pytest

from components.validate import validate_batch
from components.warehouse import DuckDBWarehouse, TWEET_COLUMNS


def _tweets(ids, texts=None, labels=None):
    n = len(ids)
    texts = texts or [f"tweet {i}" for i in ids]
    return pd.DataFrame({"id": ids, "text": texts, "raw_text": texts,
                         "label": labels or ["neutral"] * n, "label_source": ["gold"] * n,
                         "date": [None] * n, "lang": ["en"] * n, "source": ["t"] * n,
                         "source_file": ["f.jsonl"] * n, "line": list(range(1, n + 1))},
                        columns=TWEET_COLUMNS)


def _quarantine(lines):
    return pd.DataFrame({"source_file": "f.jsonl", "line": lines, "reason": "invalid JSON",
                         "raw": [f"junk {line}" for line in lines]})


def test_reloading_the_same_rows_adds_nothing(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    first = warehouse.load(_tweets(["1", "2", "3"]), _quarantine([4, 5]))
    again = warehouse.load(_tweets(["1", "2", "3", "9"]), _quarantine([4, 5]))
    assert (first.loaded, first.duplicates, first.quarantined) == (3, 0, 2)
    assert (again.loaded, again.duplicates, again.quarantined) == (1, 3, 0)
    assert warehouse.read_tweets()["id"].tolist() == ["1", "2", "3", "9"]
    assert len(warehouse.read_quarantine()) == 2


def test_a_failing_load_writes_nothing(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    broken = _tweets(["1", "2"])
    broken.loc[1, "text"] = None  # violates NOT NULL after the first row went in
    with pytest.raises(Exception):
        warehouse.load(broken, _quarantine([7]))
    assert warehouse.read_tweets().empty
    assert warehouse.read_quarantine().empty


def test_validation_quarantines_bad_rows_and_drops_repeated_ids(tmp_path):
    batch = _tweets(["1", "2", "3", "1"], texts=["ok", "", "fine", "again"],
                    labels=["positive", "neutral", "joyful", "negative"])
    batch.to_parquet(tmp_path / "labelled.parquet")
    _quarantine([9]).to_parquet(tmp_path / "q.parquet")
    result = validate_batch(str(tmp_path / "labelled.parquet"), [str(tmp_path / "q.parquet")],
                            str(tmp_path))
    valid = pd.read_parquet(result.tweets_path)
    quarantine = pd.read_parquet(result.quarantine_path)
    assert valid[["id", "text"]].values.tolist() == [["1", "ok"]]
    assert result.duplicates_in_batch == 1
    assert sorted(quarantine["reason"]) == ["invalid JSON", "no text after normalisation",
                                            "unknown label 'joyful'"]


def _hold_lock(path, seconds: int):
    """Start a process that holds the DuckDB file for `seconds`; return it once it does."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         f"print('held', flush=True); time.sleep({seconds})", str(path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_load_waits_for_another_process_to_release_the_file(tmp_path):
    import time

    path = tmp_path / "w.duckdb"
    DuckDBWarehouse(path).load(_tweets(["1"]), _quarantine([]))
    holder = _hold_lock(path, 3)
    started = time.monotonic()

    result = DuckDBWarehouse(path).load(_tweets(["2"]), _quarantine([]))

    holder.wait(timeout=30)
    assert result.loaded == 1 and time.monotonic() - started > 1.0


def test_a_lock_held_past_the_wait_is_a_clear_error(tmp_path):
    import duckdb

    path = tmp_path / "w.duckdb"
    DuckDBWarehouse(path).load(_tweets(["1"]), _quarantine([]))
    holder = _hold_lock(path, 30)
    try:
        with pytest.raises(duckdb.IOException, match="Could not set lock"):
            DuckDBWarehouse(path)._connect(wait_seconds=1.0)
    finally:
        holder.kill()
        holder.wait()

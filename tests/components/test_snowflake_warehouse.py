"""The Snowflake warehouse, through a real prefect-snowflake connector, against fakesnow's server.

fakesnow's server speaks Snowflake's HTTP protocol on loopback, so the real connector, cursor and
transaction calls run unchanged. SnowflakeCredentials is a Prefect block that keeps extra fields,
and passes them on to snowflake.connector.connect, so host, port and protocol travel in it: no
subclass is needed.
"""

import os
import uuid

import fakesnow
import pandas as pd
import pytest
import sqlglot
from snowflake.connector.errors import Error as SnowflakeError

from components.warehouse import (
    QUARANTINE_KEY_COLUMNS,
    QUARANTINE_ROW_COLUMNS,
    QUARANTINE_TABLE,
    SNOWFLAKE_QUARANTINE_DDL,
    SNOWFLAKE_TWEETS_DDL,
    TWEET_COLUMNS,
    TWEETS_TABLE,
    SnowflakeWarehouse,
    insert_new_rows_sql,
    insert_sql,
    stage_table_sql,
    staging_batches,
)
from tests.conftest import TRAIN_FILE, sample_lines

# The connector probes cloud metadata addresses at login to describe its platform; the tests
# must reach nothing but the loopback server.
os.environ["SNOWFLAKE_DISABLE_PLATFORM_DETECTION"] = "true"


@pytest.fixture(scope="module")
def snowflake_server() -> dict:
    """The connection arguments of a fakesnow server on loopback, for this module's tests."""
    with fakesnow.server(host="127.0.0.1") as arguments:
        assert arguments["host"] == "127.0.0.1"
        yield arguments


def _credentials(server: dict):
    from prefect_snowflake import SnowflakeCredentials

    # network_timeout=1 (fakesnow's own choice) stops the connector retrying a failed statement.
    return SnowflakeCredentials(**server)


def _connector(server: dict, database: str):
    from prefect_snowflake import SnowflakeConnector

    return SnowflakeConnector(credentials=_credentials(server), database=database,
                              warehouse="sentinova_wh", schema="public")


@pytest.fixture
def database() -> str:
    """A database name of its own for each test; fakesnow creates it at login."""
    return f"sentinova_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def warehouse(snowflake_server, database) -> SnowflakeWarehouse:
    """A Snowflake warehouse over a real SnowflakeConnector pointed at the fakesnow server."""
    return SnowflakeWarehouse(_connector(snowflake_server, database))


def _tweets(ids, texts=None, labels=None):
    n = len(ids)
    texts = texts or [f"tweet {i}" for i in ids]
    return pd.DataFrame({"id": ids, "text": texts, "raw_text": texts,
                         "label": labels or ["neutral"] * n, "label_source": ["gold"] * n,
                         "date": [None] * n, "lang": ["en"] * n, "source": ["t"] * n,
                         "source_file": ["f.jsonl"] * n, "line": list(range(1, n + 1))},
                        columns=TWEET_COLUMNS)


def _quarantine(lines, raws=None, reasons=None):
    return pd.DataFrame({"source_file": "f.jsonl", "line": lines,
                         "reason": reasons or ["invalid JSON"] * len(lines),
                         "raw": raws or [f"junk {line}" for line in lines]})


def test_reloading_the_same_rows_adds_nothing(warehouse):
    first = warehouse.load(_tweets(["1", "2", "3"]), _quarantine([4, 5]))
    again = warehouse.load(_tweets(["1", "2", "3", "9"]), _quarantine([4, 5]))

    assert first.warehouse == "snowflake" and first.table == TWEETS_TABLE
    assert (first.loaded, first.duplicates, first.quarantined, first.total_rows) == (3, 0, 2, 3)
    assert (again.loaded, again.duplicates, again.quarantined, again.total_rows) == (1, 3, 0, 4)
    assert warehouse.read_tweets()["id"].tolist() == ["1", "2", "3", "9"]
    assert len(warehouse.read_quarantine()) == 2


def test_ids_repeated_within_a_batch_count_as_duplicates(warehouse):
    result = warehouse.load(_tweets(["1", "2", "1"]), _quarantine([]))

    assert (result.loaded, result.duplicates, result.quarantined) == (2, 1, 0)
    assert warehouse.read_tweets()["id"].tolist() == ["1", "2"]


def test_quarantine_rows_are_keyed_by_file_line_and_raw_text(warehouse):
    warehouse.load(_tweets([]), _quarantine([4, 4], raws=["junk", "junk"]))
    again = warehouse.load(_tweets([]), _quarantine([4, 4, 5], raws=["junk", "edited", "junk"]))

    assert again.quarantined == 2
    rows = warehouse.read_quarantine()
    assert sorted(zip(rows["line"], rows["raw"])) == [(4, "edited"), (4, "junk"), (5, "junk")]


def test_a_failing_load_writes_nothing(warehouse):
    broken = _tweets(["1", "2"])
    broken.loc[1, "text"] = None  # violates NOT NULL after the first row was staged

    with pytest.raises(SnowflakeError):
        warehouse.load(broken, _quarantine([7]))

    assert warehouse.read_tweets().empty
    assert warehouse.read_quarantine().empty


def test_a_failure_after_the_tweets_went_in_rolls_them_back(warehouse):
    warehouse.load(_tweets(["1"]), _quarantine([]))

    # The tweets insert succeeds inside the transaction; the quarantine insert then breaks
    # NOT NULL on reason, and the new tweets must go with it.
    with pytest.raises(SnowflakeError):
        warehouse.load(_tweets(["1", "2", "3"]), _quarantine([8], reasons=[None]))

    assert warehouse.read_tweets()["id"].tolist() == ["1"]
    assert warehouse.read_quarantine().empty
    assert warehouse.load(_tweets(["2"]), _quarantine([])).loaded == 1


def test_reads_return_the_loaded_frames(warehouse):
    tweets = _tweets(["b", "a"], texts=["second", "first"], labels=["positive", "negative"])
    rejected = _quarantine([9, 2], raws=["{bad", "[]"], reasons=["invalid JSON", "not a tweet"])
    warehouse.load(tweets, rejected)

    tweets = warehouse.read_tweets()
    assert tweets.columns.tolist() == ["id", "text", "label", "label_source"]
    assert tweets.values.tolist() == [["a", "first", "negative", "gold"],
                                      ["b", "second", "positive", "gold"]]
    quarantine = warehouse.read_quarantine()
    assert quarantine.columns.tolist() == ["source_file", "line", "reason", "raw"]
    assert quarantine.values.tolist() == [["f.jsonl", 2, "not a tweet", "[]"],
                                          ["f.jsonl", 9, "invalid JSON", "{bad"]]


def test_reads_of_an_empty_warehouse_return_empty_frames(warehouse):
    assert warehouse.read_tweets().empty
    assert warehouse.read_quarantine().columns.tolist() == ["source_file", "line", "reason", "raw"]


def test_text_with_quotes_and_percent_signs_round_trips(warehouse):
    text = "it's 100% \"great\" %(id)s \\o/ 😀"
    warehouse.load(_tweets(["1"], texts=[text]), _quarantine([]))

    assert warehouse.read_tweets()["text"].tolist() == [text]


def test_staging_batches_keep_every_record_in_order_under_the_size_limit():
    records = [{"id": str(i), "text": "é" * (i % 50)} for i in range(300)]
    batches = list(staging_batches(records, max_bytes=1000))

    assert [record for batch in batches for record in batch] == records
    assert len(batches) > 5
    for batch in batches:
        assert sum(len(str(v).encode("utf-8")) + 8 for r in batch for v in r.values()) <= 1000


def test_a_batch_staged_in_several_statements_loads_every_row(warehouse, monkeypatch):
    monkeypatch.setattr("components.warehouse.STAGE_BATCH_BYTES", 8 * 1024)
    ids = [f"{i:04d}" for i in range(300)]
    result = warehouse.load(_tweets(ids, texts=[f"tweet {i} " + "x" * 40 for i in ids]),
                            _quarantine([]))

    assert (result.loaded, result.total_rows) == (300, 300)
    assert warehouse.read_tweets()["id"].tolist() == ids


def test_the_sql_it_builds_is_snowflake_sql_that_fakesnow_runs(snowflake_server, database):
    statements = [
        SNOWFLAKE_TWEETS_DDL,
        SNOWFLAKE_QUARANTINE_DDL,
        stage_table_sql("stage_t", TWEET_COLUMNS),
        stage_table_sql("stage_q", QUARANTINE_ROW_COLUMNS),
        insert_sql("stage_t", TWEET_COLUMNS),
        insert_new_rows_sql(TWEETS_TABLE, "stage_t", TWEET_COLUMNS, ["id"]),
        insert_new_rows_sql(QUARANTINE_TABLE, "stage_q", QUARANTINE_ROW_COLUMNS,
                            QUARANTINE_KEY_COLUMNS),
    ]
    for statement in statements:
        sqlglot.parse_one(statement.replace("%(", "(").replace(")s", ")"), read="snowflake")
    assert "loaded_at TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP\n" in SNOWFLAKE_TWEETS_DDL
    assert "CREATE OR REPLACE TEMPORARY TABLE stage_q (source_file VARCHAR, line BIGINT" \
        in statements[3]

    connector = _connector(snowflake_server, database)
    with connector.get_connection().cursor() as cursor:
        for statement in statements[:4]:
            cursor.execute(statement)
        cursor.executemany(statements[4], [dict.fromkeys(TWEET_COLUMNS, "x") | {"line": 1}])
        cursor.execute("BEGIN TRANSACTION")
        cursor.execute(statements[5])
        assert cursor.rowcount == 1
        cursor.execute(statements[5])
        assert cursor.rowcount == 0
        cursor.execute("COMMIT")
    connector.close()


@pytest.fixture
def saved_block(prefect_harness, snowflake_server, database) -> str:
    """The name of a SnowflakeConnector block saved to the Prefect test server."""
    name = f"sentinova-snowflake-{database.replace('_', '-')}"
    _connector(snowflake_server, database).save(name)
    return name


def test_from_block_reads_through_the_saved_connector(saved_block, snowflake_server):
    warehouse = SnowflakeWarehouse.from_block(saved_block)

    # The saved block must keep the loopback address, or the connector would aim at the account.
    saved = warehouse.connector.credentials.model_dump()
    assert (saved["host"], saved["port"], saved["protocol"]) == (
        "127.0.0.1", snowflake_server["port"], "http")
    assert warehouse.load(_tweets(["1"]), _quarantine([])).loaded == 1
    assert warehouse.read_tweets()["id"].tolist() == ["1"]


def test_a_missing_block_is_a_clear_error(prefect_harness):
    with pytest.raises(ValueError, match="no SnowflakeConnector block named 'no-such-block'"):
        SnowflakeWarehouse.from_block("no-such-block")


@pytest.fixture
def snowflake_settings(monkeypatch, saved_block):
    """Settings that point the ETL flow's load stage at the saved Snowflake block."""
    from sentinova.settings import get_settings

    monkeypatch.setenv("SENTINOVA_WAREHOUSE", "snowflake")
    monkeypatch.setenv("SENTINOVA_SNOWFLAKE_CONNECTOR_BLOCK", saved_block)
    get_settings.cache_clear()
    yield saved_block
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_etl_flow_loads_into_snowflake_once(snowflake_settings, shared_data, tmp_path):
    from flows.etl import etl_flow

    inputs = sample_lines(TRAIN_FILE, tmp_path / "semeval_sample.jsonl", 40, every=50)
    with inputs.open("a") as handle:
        handle.write("{broken json\n")

    first = etl_flow(inputs=[str(inputs)])
    again = etl_flow(inputs=[str(inputs)])

    assert (first.warehouse, first.rows_read, first.loaded, first.quarantined) == (
        "snowflake", 41, 40, 1)
    assert (again.loaded, again.duplicates, again.total_rows) == (0, 40, 40)
    warehouse = SnowflakeWarehouse.from_block(snowflake_settings)
    assert len(warehouse.read_tweets()) == 40
    assert warehouse.read_quarantine()["line"].tolist() == [41]

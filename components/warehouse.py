"""Load stage: the tweet warehouse, embedded DuckDB by default or Snowflake."""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from sentinova.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TWEETS_TABLE = "tweets"
QUARANTINE_TABLE = "quarantine"
TWEET_COLUMNS = ["id", "text", "raw_text", "label", "label_source", "date", "lang", "source",
                 "source_file", "line"]
QUARANTINE_KEY_COLUMNS = ["source_file", "line", "raw_hash"]

TWEETS_DDL = f"""
CREATE TABLE IF NOT EXISTS {TWEETS_TABLE} (
    id VARCHAR PRIMARY KEY,
    text VARCHAR NOT NULL,
    raw_text VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    label_source VARCHAR NOT NULL,
    date VARCHAR,
    lang VARCHAR,
    source VARCHAR,
    source_file VARCHAR,
    line BIGINT,
    loaded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""

QUARANTINE_DDL = f"""
CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (
    source_file VARCHAR NOT NULL,
    line BIGINT NOT NULL,
    raw_hash VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR,
    quarantined_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (source_file, line, raw_hash)
)"""


class LoadResult(BaseModel):
    """What one load added: new tweets, ids already present, and new quarantine rows."""

    warehouse: str
    table: str
    loaded: int
    duplicates: int
    quarantined: int
    total_rows: int


class Warehouse(abc.ABC):
    """Where validated tweets and quarantined rows live; loads are keyed and all-or-nothing."""

    name: str

    @abc.abstractmethod
    def load(self, tweets: pd.DataFrame, quarantine: pd.DataFrame) -> LoadResult:
        """Insert tweets whose id is new and quarantine rows not seen before, in one transaction."""

    @abc.abstractmethod
    def read_tweets(self) -> pd.DataFrame:
        """Return every loaded tweet's id, text, label and label_source, ordered by id."""

    @abc.abstractmethod
    def read_quarantine(self) -> pd.DataFrame:
        """Return every quarantined row with its reason, source file and line."""


def with_raw_hash(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Return the quarantine rows with the hash that keys them beside file and line."""
    quarantine = quarantine.copy()
    quarantine["raw_hash"] = [hashlib.sha1(str(raw).encode("utf-8")).hexdigest()
                              for raw in quarantine["raw"]]
    quarantine["line"] = quarantine["line"].astype("int64")
    return quarantine.drop_duplicates(subset=QUARANTINE_KEY_COLUMNS)


class DuckDBWarehouse(Warehouse):
    """The embedded warehouse: one DuckDB file under SENTINOVA_HOME."""

    name = "duckdb"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self, wait_seconds: float = 120.0):
        import duckdb

        # DuckDB lets one process hold the file: a second ETL or training run on the same home
        # waits for the first to let go instead of failing at once.
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                connection = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as error:
                if "Could not set lock" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        connection.execute(TWEETS_DDL)
        connection.execute(QUARANTINE_DDL)
        return connection

    def load(self, tweets: pd.DataFrame, quarantine: pd.DataFrame) -> LoadResult:
        batch = tweets[TWEET_COLUMNS].drop_duplicates(subset="id")
        rejected = with_raw_hash(quarantine)[QUARANTINE_KEY_COLUMNS + ["reason", "raw"]]
        connection = self._connect()
        try:
            connection.execute("BEGIN TRANSACTION")
            before = self._count(connection)
            connection.register("batch", batch)
            connection.register("rejected", rejected)
            connection.execute(
                f"INSERT INTO {TWEETS_TABLE} ({', '.join(TWEET_COLUMNS)}) "
                f"SELECT {', '.join(TWEET_COLUMNS)} FROM batch ON CONFLICT DO NOTHING")
            connection.execute(
                f"INSERT INTO {QUARANTINE_TABLE} (source_file, line, raw_hash, reason, raw) "
                "SELECT source_file, line, raw_hash, reason, raw FROM rejected "
                "ON CONFLICT DO NOTHING")
            after = self._count(connection)
            connection.execute("COMMIT")
        except Exception:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

        loaded = after[0] - before[0]
        return LoadResult(warehouse=self.name, table=TWEETS_TABLE, loaded=loaded,
                          duplicates=len(tweets) - loaded, quarantined=after[1] - before[1],
                          total_rows=after[0])

    @staticmethod
    def _count(connection) -> tuple[int, int]:
        tweets = connection.execute(f"SELECT count(*) FROM {TWEETS_TABLE}").fetchall()[0][0]
        rejected = connection.execute(f"SELECT count(*) FROM {QUARANTINE_TABLE}").fetchall()[0][0]
        return tweets, rejected

    def read_tweets(self) -> pd.DataFrame:
        connection = self._connect()
        try:
            return connection.execute(
                f"SELECT id, text, label, label_source FROM {TWEETS_TABLE} ORDER BY id").df()
        finally:
            connection.close()

    def read_quarantine(self) -> pd.DataFrame:
        connection = self._connect()
        try:
            return connection.execute(
                f"SELECT source_file, line, reason, raw FROM {QUARANTINE_TABLE} "
                "ORDER BY source_file, line").df()
        finally:
            connection.close()


SNOWFLAKE_TWEETS_DDL = TWEETS_DDL.replace(" TIMESTAMP ", " TIMESTAMP_NTZ ")
SNOWFLAKE_QUARANTINE_DDL = QUARANTINE_DDL.replace(" TIMESTAMP ", " TIMESTAMP_NTZ ")
QUARANTINE_ROW_COLUMNS = QUARANTINE_KEY_COLUMNS + ["reason", "raw"]
STAGE_TWEETS_TABLE = "sentinova_stage_tweets"
STAGE_QUARANTINE_TABLE = "sentinova_stage_quarantine"
# The connector binds values client-side into one multi-row INSERT per batch, and Snowflake
# advises keeping a statement under 1 MB; half that leaves room for quoting and escapes.
STAGE_BATCH_BYTES = 512 * 1024


def stage_table_sql(staging_table: str, columns: list[str]) -> str:
    """Return the DDL of a session-scoped staging table with the given columns."""
    # No constraints here: the target table's NOT NULL rules reject a bad batch, inside the
    # transaction, so staging never fails half-way for a reason the load would not.
    definitions = ", ".join(f"{column} {'BIGINT' if column == 'line' else 'VARCHAR'}"
                            for column in columns)
    return f"CREATE OR REPLACE TEMPORARY TABLE {staging_table} ({definitions})"


def insert_new_rows_sql(table: str, staging_table: str, columns: list[str],
                        keys: list[str]) -> str:
    """Return an INSERT of the staged rows whose key is not in the table yet."""
    # This anti-join means the same as MERGE ... WHEN NOT MATCHED THEN INSERT on Snowflake;
    # fakesnow, which the tests run against, cannot run a MERGE inside an explicit transaction.
    selected = ", ".join(f"s.{column}" for column in columns)
    match = " AND ".join(f"t.{key} = s.{key}" for key in keys)
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected} "
            f"FROM {staging_table} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})")


def staging_batches(records: list[dict[str, Any]],
                    max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Yield the records in order, in batches whose values add up to at most max_bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    for record in records:
        record_size = sum(len(str(value).encode("utf-8")) + 8 for value in record.values())
        if batch and size + record_size > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_size
    if batch:
        yield batch


def insert_sql(table: str, columns: list[str]) -> str:
    """Return a parameterised INSERT for the connector's pyformat paramstyle."""
    placeholders = ", ".join(f"%({column})s" for column in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


class SnowflakeWarehouse(Warehouse):
    """Snowflake through a prefect-snowflake SnowflakeConnector block (or a given connector).

    Snowflake does not enforce primary keys, so two loads running at the same time can both
    insert an id that neither has committed yet; run one ETL at a time against a warehouse.
    """

    name = "snowflake"

    def __init__(self, connector: Any):
        self.connector = connector

    @classmethod
    def from_block(cls, block_name: str) -> SnowflakeWarehouse:
        """Return a warehouse over the saved SnowflakeConnector block of that name."""
        from prefect_snowflake import SnowflakeConnector

        try:
            connector = SnowflakeConnector.load(block_name)
        except ValueError as error:
            raise ValueError(
                f"no SnowflakeConnector block named {block_name!r} "
                f"(set SENTINOVA_SNOWFLAKE_CONNECTOR_BLOCK or save one): {error}") from error
        return cls(connector)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """Yield a cursor on a Snowflake session with both tables present, closed afterwards."""
        # Closing ends the session, which also drops its temporary staging tables; the
        # connector's own fetch methods are not used because they reuse cursors by query text.
        connection = self.connector.get_connection()
        try:
            cursor = connection.cursor()
            try:
                # DDL commits any open transaction on Snowflake, so it runs before BEGIN.
                cursor.execute(SNOWFLAKE_TWEETS_DDL)
                cursor.execute(SNOWFLAKE_QUARANTINE_DDL)
                yield cursor
            finally:
                cursor.close()
        finally:
            self.connector.close()

    @staticmethod
    def _stage(cursor: Any, staging_table: str, frame: pd.DataFrame,
               columns: list[str]) -> None:
        """Copy the frame's rows into a fresh staging table of this session."""
        cursor.execute(stage_table_sql(staging_table, columns))
        for batch in staging_batches(_records(frame, columns), STAGE_BATCH_BYTES):
            cursor.executemany(insert_sql(staging_table, columns), batch)

    def load(self, tweets: pd.DataFrame, quarantine: pd.DataFrame) -> LoadResult:
        batch = tweets[TWEET_COLUMNS].drop_duplicates(subset="id")
        rejected = with_raw_hash(quarantine)
        with self._session() as cursor:
            # Staging goes before BEGIN: its tables are private to this session, and creating
            # them is DDL.
            self._stage(cursor, STAGE_TWEETS_TABLE, batch, TWEET_COLUMNS)
            self._stage(cursor, STAGE_QUARANTINE_TABLE, rejected, QUARANTINE_ROW_COLUMNS)
            cursor.execute("BEGIN TRANSACTION")
            try:
                cursor.execute(insert_new_rows_sql(TWEETS_TABLE, STAGE_TWEETS_TABLE,
                                                   TWEET_COLUMNS, ["id"]))
                loaded = cursor.rowcount
                cursor.execute(insert_new_rows_sql(QUARANTINE_TABLE, STAGE_QUARANTINE_TABLE,
                                                   QUARANTINE_ROW_COLUMNS, QUARANTINE_KEY_COLUMNS))
                quarantined = cursor.rowcount
                cursor.execute(f"SELECT count(*) FROM {TWEETS_TABLE}")
                total_rows = cursor.fetchone()[0]
                cursor.execute("COMMIT")
            except Exception:
                _rollback(cursor)
                raise

        return LoadResult(warehouse=self.name, table=TWEETS_TABLE, loaded=loaded,
                          duplicates=len(tweets) - loaded, quarantined=quarantined,
                          total_rows=total_rows)

    def _frame(self, sql: str, columns: list[str]) -> pd.DataFrame:
        with self._session() as cursor:
            cursor.execute(sql)
            rows = cursor.fetchall()
        return pd.DataFrame([tuple(row) for row in rows], columns=columns)

    def read_tweets(self) -> pd.DataFrame:
        columns = ["id", "text", "label", "label_source"]
        return self._frame(f"SELECT {', '.join(columns)} FROM {TWEETS_TABLE} ORDER BY id",
                           columns)

    def read_quarantine(self) -> pd.DataFrame:
        columns = ["source_file", "line", "reason", "raw"]
        return self._frame(f"SELECT {', '.join(columns)} FROM {QUARANTINE_TABLE} "
                           "ORDER BY source_file, line", columns)


def _rollback(cursor: Any) -> None:
    """Roll back the open transaction, logging rather than raising if that fails too."""
    try:
        cursor.execute("ROLLBACK")
    except Exception:
        # The load's own error is the one worth raising; a lost session rolls back by itself.
        logger.warning("ROLLBACK failed after a failed Snowflake load", exc_info=True)


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    clean = frame[columns].astype(object).where(frame[columns].notna(), None)
    return clean.to_dict(orient="records")


def get_warehouse(settings: Settings | None = None) -> Warehouse:
    """Return the configured warehouse (SENTINOVA_WAREHOUSE=duckdb|snowflake)."""
    settings = settings or get_settings()
    if settings.warehouse == "snowflake":
        return SnowflakeWarehouse.from_block(settings.snowflake_connector_block)
    return DuckDBWarehouse(settings.duckdb_path)


@task(name="load")
def load_task(tweets_path: str, quarantine_path: str) -> LoadResult:
    """Load the validated batch into the warehouse, keyed by tweet id."""
    warehouse = get_warehouse()
    result = warehouse.load(pd.read_parquet(tweets_path), pd.read_parquet(quarantine_path))
    get_run_logger().info("loaded %d tweets into %s.%s, %d duplicates skipped, %d quarantined",
                          result.loaded, result.warehouse, result.table, result.duplicates,
                          result.quarantined)
    return result

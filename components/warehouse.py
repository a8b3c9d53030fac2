"""Load stage: the tweet warehouse, DuckDB embedded by default or Snowflake via prefect-snowflake."""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from sentinova.settings import Settings, get_settings

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

    def _connect(self):
        import duckdb

        connection = duckdb.connect(str(self.path))
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


def merge_tweets_sql(staging_table: str) -> str:
    """Return the Snowflake MERGE that inserts staged tweets whose id is not yet loaded."""
    columns = ", ".join(TWEET_COLUMNS)
    values = ", ".join(f"s.{column}" for column in TWEET_COLUMNS)
    return (f"MERGE INTO {TWEETS_TABLE} t USING {staging_table} s ON t.id = s.id "
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})")


def merge_quarantine_sql(staging_table: str) -> str:
    """Return the Snowflake MERGE that inserts quarantine rows not seen before."""
    columns = "source_file, line, raw_hash, reason, raw"
    values = ", ".join(f"s.{column.strip()}" for column in columns.split(","))
    keys = " AND ".join(f"t.{key} = s.{key}" for key in QUARANTINE_KEY_COLUMNS)
    return (f"MERGE INTO {QUARANTINE_TABLE} t USING {staging_table} s ON {keys} "
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})")


def insert_sql(table: str, columns: list[str]) -> str:
    """Return a parameterised INSERT for the connector's pyformat paramstyle."""
    placeholders = ", ".join(f"%({column})s" for column in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


class SnowflakeWarehouse(Warehouse):
    """Snowflake through a prefect-snowflake SnowflakeConnector block (or a given connector)."""

    name = "snowflake"

    def __init__(self, connector: Any):
        self.connector = connector

    @classmethod
    def from_block(cls, block_name: str) -> SnowflakeWarehouse:
        """Return a warehouse over the saved SnowflakeConnector block of that name."""
        from prefect_snowflake import SnowflakeConnector

        return cls(SnowflakeConnector.load(block_name))

    def _scalar(self, sql: str) -> int:
        return int(self.connector.fetch_one(sql)[0])

    def _ensure_tables(self) -> None:
        self.connector.execute(TWEETS_DDL.replace("TIMESTAMP", "TIMESTAMP_NTZ"))
        self.connector.execute(QUARANTINE_DDL.replace("TIMESTAMP", "TIMESTAMP_NTZ"))

    def load(self, tweets: pd.DataFrame, quarantine: pd.DataFrame) -> LoadResult:
        batch = tweets[TWEET_COLUMNS].drop_duplicates(subset="id")
        rejected = with_raw_hash(quarantine)
        self._ensure_tables()
        connection = self.connector.get_connection()
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT count(*) FROM {TWEETS_TABLE}")
            before_tweets = cursor.fetchone()[0]
            cursor.execute(f"SELECT count(*) FROM {QUARANTINE_TABLE}")
            before_rejected = cursor.fetchone()[0]
            # Rows are staged in temporary tables, then merged by key, so a re-run adds nothing.
            cursor.execute(f"CREATE TEMPORARY TABLE stage_tweets LIKE {TWEETS_TABLE}")
            cursor.execute(f"CREATE TEMPORARY TABLE stage_quarantine LIKE {QUARANTINE_TABLE}")
            if len(batch):
                cursor.executemany(insert_sql("stage_tweets", TWEET_COLUMNS),
                                   _records(batch, TWEET_COLUMNS))
            columns = QUARANTINE_KEY_COLUMNS + ["reason", "raw"]
            if len(rejected):
                cursor.executemany(insert_sql("stage_quarantine", columns),
                                   _records(rejected, columns))
            cursor.execute(merge_tweets_sql("stage_tweets"))
            cursor.execute(merge_quarantine_sql("stage_quarantine"))
            cursor.execute(f"SELECT count(*) FROM {TWEETS_TABLE}")
            after_tweets = cursor.fetchone()[0]
            cursor.execute(f"SELECT count(*) FROM {QUARANTINE_TABLE}")
            after_rejected = cursor.fetchone()[0]
            cursor.execute("DROP TABLE IF EXISTS stage_tweets")
            cursor.execute("DROP TABLE IF EXISTS stage_quarantine")
            cursor.execute("COMMIT")
        except Exception:
            cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

        loaded = after_tweets - before_tweets
        return LoadResult(warehouse=self.name, table=TWEETS_TABLE, loaded=loaded,
                          duplicates=len(tweets) - loaded,
                          quarantined=after_rejected - before_rejected, total_rows=after_tweets)

    def _frame(self, sql: str, columns: list[str]) -> pd.DataFrame:
        self._ensure_tables()
        return pd.DataFrame([tuple(row) for row in self.connector.fetch_all(sql)],
                            columns=columns)

    def read_tweets(self) -> pd.DataFrame:
        columns = ["id", "text", "label", "label_source"]
        return self._frame(f"SELECT {', '.join(columns)} FROM {TWEETS_TABLE} ORDER BY id",
                           columns)

    def read_quarantine(self) -> pd.DataFrame:
        columns = ["source_file", "line", "reason", "raw"]
        return self._frame(f"SELECT {', '.join(columns)} FROM {QUARANTINE_TABLE} "
                           "ORDER BY source_file, line", columns)


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

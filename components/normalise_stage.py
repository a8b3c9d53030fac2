"""Normalise stage of the ETL flow: the shared normaliser applied to a staged batch."""

from __future__ import annotations

from prefect import get_run_logger, task

from components.normalise import normalise_tweet


def normalise_batch(tweets_path: str, out_path: str) -> int:
    """Write the staged tweets with a normalised `text` column and return the row count."""
    import pandas as pd

    tweets = pd.read_parquet(tweets_path)
    tweets["text"] = [normalise_tweet(text) for text in tweets["raw_text"]]
    tweets.to_parquet(out_path, index=False)
    return len(tweets)


@task(name="normalise")
def normalise_task(tweets_path: str, out_path: str) -> str:
    """Normalise the staged tweets and return the path of the normalised batch."""
    rows = normalise_batch(tweets_path, out_path)
    get_run_logger().info("normalised %d tweets", rows)
    return out_path

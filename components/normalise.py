"""The one tweet normaliser, shared by training, prediction and serving."""

from __future__ import annotations

import html
import re

from prefect import get_run_logger, task

URL_TOKEN = "http"
USER_TOKEN = "@user"

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w{1,15}\b")
_SPACE = re.compile(r"\s+")


def normalise_tweet(text: str) -> str:
    """Return the tweet with entities unescaped, mentions and links replaced, spaces collapsed."""
    text = html.unescape(html.unescape(text))
    text = _URL.sub(URL_TOKEN, text)
    text = _MENTION.sub(USER_TOKEN, text)
    return _SPACE.sub(" ", text).strip()


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

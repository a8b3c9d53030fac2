"""The one tweet normaliser, shared by training, prediction and serving.

It imports nothing heavy, so `sentinova predict` and the serving image start without Prefect;
the ETL stage that applies it to a staged batch is components/normalise_stage.py.
"""

from __future__ import annotations

import html
import re

URL_TOKEN = "http"
USER_TOKEN = "@user"

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w{1,15}\b")


def normalise_tweet(text: str) -> str:
    """Return the tweet with entities unescaped, mentions and links replaced, spaces collapsed."""
    # Each step runs only when its marker is present: most tweets skip two of the three regexes.
    if "&" in text:
        text = html.unescape(html.unescape(text))
    lowered = text.lower()
    if "http" in lowered or "www." in lowered:
        text = _URL.sub(URL_TOKEN, text)
    if "@" in text:
        text = _MENTION.sub(USER_TOKEN, text)
    return " ".join(text.split())

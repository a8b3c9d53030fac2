"""Sentinova: a tweet-sentiment MLOps pipeline on Prefect, TensorFlow and MLflow."""

from sentinova.settings import configure_environment

# Before TensorFlow or Prefect is imported anywhere in the process.
configure_environment()

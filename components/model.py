"""The served model: normaliser + WordPiece tokenizer + Keras BiLSTM, packed as an MLflow pyfunc."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402  (after the log level, so TensorFlow starts quietly)
from keras import ops  # noqa: E402

from components.normalise import normalise_tweet
from components.tokenizer import encode, pad
from sentinova.settings import LABELS

MODEL_FILE = "model.keras"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "sentinova.json"


@keras.saving.register_keras_serializable(package="sentinova")
class MaskedAttentionPooling(keras.layers.Layer):
    """Attention-weighted sum over the unpadded time steps of a sequence."""

    def build(self, input_shape):
        self.score = keras.layers.Dense(1, use_bias=False)
        self.score.build(input_shape)

    def call(self, sequence, mask=None):
        scores = ops.squeeze(self.score(sequence), axis=-1)
        if mask is not None:
            scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        weights = ops.expand_dims(ops.softmax(scores, axis=-1), -1)
        return ops.sum(weights * sequence, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None


class SentimentClassifier:
    """Raw tweets in, [p_negative, p_neutral, p_positive] out, in length-sorted batches."""

    def __init__(self, keras_model: Any, tokenizer: Any, max_len: int, batch_size: int = 1024):
        import tensorflow as tf

        self.keras_model = keras_model
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        # One traced graph for any batch shape: retracing per padded width would cost more than
        # the prediction itself.
        self._forward = tf.function(
            lambda ids: keras_model(ids, training=False),
            input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)

    @classmethod
    def load(cls, model_dir: str | Path) -> SentimentClassifier:
        """Return the classifier saved in a model folder by `save`."""
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        keras_model = keras.saving.load_model(model_dir / MODEL_FILE, compile=False)
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        return cls(keras_model, tokenizer, max_len=config["max_len"])

    def save(self, model_dir: str | Path, extra_config: dict[str, Any] | None = None) -> Path:
        """Write the Keras model, tokenizer and config into model_dir and return it."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.keras_model.save(model_dir / MODEL_FILE)
        self.tokenizer.save(str(model_dir / TOKENIZER_FILE))
        config = {"max_len": self.max_len, "labels": list(LABELS), **(extra_config or {})}
        (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return model_dir

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Return the WordPiece ids of the normalised texts."""
        return encode(self.tokenizer, [normalise_tweet(text) for text in texts], self.max_len)

    def predict_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Return the class probabilities of already-tokenised texts, in input order."""
        probs = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
        if not ids:
            return probs
        # Sorting by length keeps padding, and so wasted LSTM steps, to a minimum.
        order = np.argsort([len(sequence) for sequence in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = pad([ids[row] for row in rows])
            probs[rows] = self._forward(batch).numpy()
        return probs

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Return an (n, 3) array of [p_negative, p_neutral, p_positive] for raw tweet texts."""
        return self.predict_ids(self.token_ids(list(texts)))

    def predict(self, texts: list[str]) -> list[str]:
        """Return the predicted label of each raw tweet text."""
        return [LABELS[index] for index in self.predict_proba(texts).argmax(axis=1)]


try:
    import mlflow.pyfunc

    # MLflow asks for type hints to infer a signature; the pyfunc takes plain texts or a frame.
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")

    class SentinovaPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow wrapper: predict(list of texts | DataFrame with `text`) -> labels and probs."""

        def load_context(self, context: Any) -> None:
            self.classifier = SentimentClassifier.load(context.artifacts["model_dir"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            if isinstance(model_input, pd.DataFrame):
                column = "text" if "text" in model_input.columns else model_input.columns[0]
                texts = model_input[column].astype(str).tolist()
            else:
                texts = [str(text) for text in model_input]
            probs = self.classifier.predict_proba(texts)
            frame = pd.DataFrame(probs, columns=[f"p_{label}" for label in LABELS])
            frame.insert(0, "label", [LABELS[i] for i in probs.argmax(axis=1)])
            return frame

except ImportError:  # the serving image may carry the classifier without MLflow
    SentinovaPyfunc = None  # type: ignore[assignment,misc]


def load_classifier(model_uri: str) -> SentimentClassifier:
    """Return the classifier behind an MLflow model URI, a pyfunc folder or a model folder."""
    import mlflow

    path = Path(model_uri)
    if (path / CONFIG_FILE).is_file():
        return SentimentClassifier.load(path)
    if not (path / "MLmodel").is_file():
        from sentinova.settings import configure_mlflow

        configure_mlflow()
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    # The classifier is read straight from the pyfunc's files: its wrapper and environment
    # checks are not needed to predict.
    artifacts = mlflow.models.Model.load(path).flavors["python_function"]["artifacts"]
    return SentimentClassifier.load(path / artifacts["model_dir"]["path"])

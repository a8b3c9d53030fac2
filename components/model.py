"""The served model: normaliser + WordPiece tokenizer + BiLSTM, packed as an MLflow pyfunc."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from components.normalise import normalise_tweet
from components.tokenizer import PAD_ID, encode, pad
from sentinova.settings import LABELS

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "sentinova.json"
WEIGHTS_FILE = "model.weights.h5"


def _keras() -> Any:
    """Return the keras module, imported quietly and with the custom layers registered."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    _attention_layer()
    return keras


@functools.cache
def _attention_layer() -> type:
    """Return the MaskedAttentionPooling Keras layer class, defined on first use."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import ops

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

    MaskedAttentionPooling.__qualname__ = "MaskedAttentionPooling"
    globals()["MaskedAttentionPooling"] = MaskedAttentionPooling
    return MaskedAttentionPooling


@functools.cache
def _blas_threads() -> Any:
    """Return a threadpoolctl controller of the BLAS libraries loaded so far."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _single_blas_thread() -> Any:
    """Return a context in which BLAS runs on one thread."""
    # The folded pass multiplies small matrices, hundreds of times a batch: a second BLAS
    # thread buys nothing there and, when the cores are busy (tokenising, other jobs), its
    # spin-waits made the pass up to 25 times slower.
    return _blas_threads().limit(limits=1, user_api="blas")


class FoldedBiLSTM:
    """The saved BiLSTM's inference pass in NumPy, with its linear input layers folded.

    At inference the frozen embedding, the Dense projection and each LSTM's input kernel are
    one linear map of the token id, so they fold into one (2 x vocab, 4 x units) table: a
    token's step costs a row lookup plus the recurrent matmul. Both directions run in one loop,
    the backward one over each sequence reversed within its length, so padding only ever
    trails and never needs masking inside the loop.
    """

    def __init__(self, weights: dict[str, np.ndarray]):
        units = weights["forward_recurrent"].shape[0]
        # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: halving the i, f, o columns lets one tanh call
        # serve all four gates; the scale by a power of two is exact in floating point.
        scale = np.concatenate([np.full(2 * units, 0.5), np.ones(units), np.full(units, 0.5)])
        order = np.r_[0 : 2 * units, 3 * units : 4 * units, 2 * units : 3 * units]  # i f o g

        # Folded in float64, projection into the LSTM kernels first, then the embedding rows
        # in blocks: the table is at least as exact as Keras's float32 chain, and the float64
        # intermediates stay small.
        embeddings = weights["embeddings"]
        self.vocab_size = embeddings.shape[0]
        self.table = np.empty((2 * self.vocab_size, 4 * units), dtype=np.float32)
        recurrent = []
        for offset, side in ((0, "forward"), (self.vocab_size, "backward")):
            kernel = weights[f"{side}_kernel"].astype(np.float64)
            bias = weights[f"{side}_bias"].astype(np.float64)
            if "projection_kernel" in weights:
                bias = weights["projection_bias"].astype(np.float64) @ kernel + bias
                kernel = weights["projection_kernel"].astype(np.float64) @ kernel
            kernel, bias = (kernel * scale)[:, order], (bias * scale)[order]
            for start in range(0, self.vocab_size, 4096):
                rows = embeddings[start : start + 4096].astype(np.float64)
                self.table[offset + start : offset + start + len(rows)] = rows @ kernel + bias
            recurrent.append((weights[f"{side}_recurrent"] * scale)[:, order])
        self.recurrent = np.ascontiguousarray(recurrent, dtype=np.float32)
        self.units = units
        self.attention = weights["attention"][:, 0].astype(np.float32)
        self.output_kernel = weights["sentiment_kernel"].astype(np.float32)
        self.output_bias = weights["sentiment_bias"].astype(np.float32)

    @classmethod
    def from_keras_file(cls, path: str | Path) -> FoldedBiLSTM:
        """Return the folded model of a saved .keras file, read without importing Keras."""
        import h5py

        with zipfile.ZipFile(path) as archive:
            layers = {layer["config"]["name"]: layer
                      for layer in json.loads(archive.read("config.json"))["config"]["layers"]}
            _check_architecture(layers)
            with h5py.File(io.BytesIO(archive.read(WEIGHTS_FILE)), "r") as store:
                # Keras names the weight groups after layer classes ("dense_1"); the layer's
                # own name is kept in each group's `name` attribute, so look it up there.
                groups = {group["vars"].attrs.get("name"): group
                          for group in store["layers"].values() if "vars" in group}
                weights = _weights_by_role(groups, lambda group: [
                    group["vars"][str(index)][()] for index in range(len(group["vars"]))])
        return cls(weights)

    @classmethod
    def from_keras_model(cls, keras_model: Any) -> FoldedBiLSTM:
        """Return the folded model of a built Keras model."""
        layers = {layer.name: {"class_name": type(layer).__name__, "config": layer.get_config()}
                  for layer in keras_model.layers}
        _check_architecture(layers)
        return cls(_weights_by_role(
            {layer.name: layer for layer in keras_model.layers},
            lambda layer: [np.asarray(weight) for weight in layer.get_weights()]))

    def __call__(self, ids: list[list[int]]) -> np.ndarray:
        """Return the (n, 3) class probabilities of one batch of non-empty id sequences."""
        size, units = len(ids), self.units
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=size)
        steps = int(lengths.max())
        forward = pad(ids, multiple=1).T
        if forward.max() >= self.vocab_size or forward.min() < 0:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}): the tokenizer and "
                             "the model do not match")
        time_index = np.arange(steps)[:, None]
        inside = time_index < lengths[None, :]
        # Row r of the backward input is ids[r][::-1], then its padding.
        reverse = np.where(inside, lengths[None, :] - 1 - time_index, time_index)
        backward = np.take_along_axis(forward, reverse, axis=0) + self.vocab_size
        rows = np.stack([forward, backward], axis=1)

        outputs = np.zeros((steps, 2, size, units), dtype=np.float32)
        cell = np.zeros((2, size, units), dtype=np.float32)
        gates = np.empty((2, size, 4 * units), dtype=np.float32)
        inputs = np.empty_like(gates)
        scratch = np.empty_like(cell)
        hidden = np.zeros_like(cell)
        for step in range(steps):
            np.matmul(hidden, self.recurrent, out=gates)
            # mode="clip" lets take write into `out` directly instead of through a buffer.
            np.take(self.table, rows[step], axis=0, out=inputs, mode="clip")
            gates += inputs
            np.tanh(gates, out=gates)
            sigmoid = gates[..., : 3 * units]
            sigmoid *= 0.5
            sigmoid += 0.5
            cell *= gates[..., units : 2 * units]
            np.multiply(gates[..., :units], gates[..., 3 * units :], out=scratch)
            cell += scratch
            np.tanh(cell, out=scratch)
            hidden = outputs[step]
            np.multiply(gates[..., 2 * units : 3 * units], scratch, out=hidden)

        backward_out = outputs[reverse, 1, np.arange(size)[None, :]]
        sequence = np.concatenate([outputs[:, 0], backward_out], axis=2)
        sequence *= inside[:, :, None]
        mean = sequence.sum(axis=0) / lengths[:, None]
        scores = np.where(inside, sequence @ self.attention, -1e9)
        weights = np.exp(scores - scores.max(axis=0))
        weights /= weights.sum(axis=0)
        attended = np.einsum("tb,tbh->bh", weights, sequence)
        logits = np.concatenate([mean, attended], axis=1) @ self.output_kernel + self.output_bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def _check_architecture(layers: dict[str, dict[str, Any]]) -> None:
    """Raise ValueError unless the layers are the BiLSTM that FoldedBiLSTM computes."""
    expected = {"wordpiece_embedding": "Embedding", "bilstm": "Bidirectional",
                "attention": "MaskedAttentionPooling", "sentiment": "Dense"}
    optional = {"projection": "Dense"}
    inert = {"InputLayer", "SpatialDropout1D", "Dropout", "NotEqual", "GlobalAveragePooling1D",
             "Concatenate"}
    for name, layer in layers.items():
        kind = layer["class_name"]
        if expected.get(name, optional.get(name)) != kind and kind not in inert:
            raise ValueError(f"unexpected layer {name} ({kind})")
    missing = set(expected) - set(layers)
    if missing:
        raise ValueError(f"missing layers: {sorted(missing)}")
    config = layers["bilstm"]["config"]
    inner = config.get("layer", {})
    cell = inner.get("config", {})
    if (inner.get("class_name") != "LSTM" or config.get("merge_mode") != "concat"
            or cell.get("activation") != "tanh"
            or cell.get("recurrent_activation") != "sigmoid" or not cell.get("use_bias")):
        raise ValueError("the BiLSTM is not a concat of tanh/sigmoid LSTMs with biases")
    if layers["sentiment"]["config"].get("activation") != "softmax":
        raise ValueError("the output layer is not a softmax")
    projection = layers.get("projection", {}).get("config", {})
    if projection and (projection.get("activation") != "linear"
                       or not projection.get("use_bias")):
        raise ValueError("the projection is not linear with a bias")


def _weights_by_role(layers: dict[str, Any], read) -> dict[str, np.ndarray]:
    """Return the arrays FoldedBiLSTM needs, read from named layers (Keras or HDF5 groups)."""
    weights = {"embeddings": read(layers["wordpiece_embedding"])[0]}
    if "projection" in layers:
        weights["projection_kernel"], weights["projection_bias"] = read(layers["projection"])
    bilstm = layers["bilstm"]
    if hasattr(bilstm, "forward_layer"):
        directions = {"forward": read(bilstm.forward_layer),
                      "backward": read(bilstm.backward_layer)}
        attention = read(layers["attention"])
    else:
        directions = {side: [bilstm[f"{side}_layer/cell/vars/{index}"][()] for index in range(3)]
                      for side in ("forward", "backward")}
        attention = [layers["attention"]["score/vars/0"][()]]
    for side, (kernel, recurrent, bias) in directions.items():
        weights.update({f"{side}_kernel": kernel, f"{side}_recurrent": recurrent,
                        f"{side}_bias": bias})
    weights["attention"] = attention[0]
    weights["sentiment_kernel"], weights["sentiment_bias"] = read(layers["sentiment"])
    units = weights["forward_recurrent"].shape[0]
    width = weights["embeddings"].shape[1]
    if "projection_kernel" in weights:
        width = weights["projection_kernel"].shape[1]
    shapes = {"forward_kernel": (width, 4 * units), "backward_kernel": (width, 4 * units),
              "backward_recurrent": (units, 4 * units), "forward_bias": (4 * units,),
              "attention": (2 * units, 1), "sentiment_kernel": (4 * units, len(LABELS))}
    for key, shape in shapes.items():
        if weights[key].shape != shape:
            raise ValueError(f"{key} has shape {weights[key].shape}, expected {shape}")
    return weights


class SentimentClassifier:
    """Raw tweets in, [p_negative, p_neutral, p_positive] out, in length-sorted batches.

    A classifier built around a live Keras model (as in training, where the weights still
    change) predicts with Keras. One read by `load` predicts with the FoldedBiLSTM built from
    the saved weights and imports Keras only if `keras_model` is asked for.
    """

    def __init__(self, keras_model: Any, tokenizer: Any, max_len: int, batch_size: int = 1024):
        self._keras_model = keras_model
        self._keras_file: Path | None = None
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.folded: FoldedBiLSTM | None = None
        # Small batches keep the folded pass's working set in the CPU cache.
        self.folded_batch_size = 256
        self.folded_threads = min(2, os.cpu_count() or 1)
        self._keras_forward = None

    @classmethod
    def load(cls, model_dir: str | Path) -> SentimentClassifier:
        """Return the classifier saved in a model folder by `save`."""
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        classifier = cls(None, tokenizer, max_len=config["max_len"])
        classifier._keras_file = model_dir / MODEL_FILE
        try:
            classifier.folded = FoldedBiLSTM.from_keras_file(classifier._keras_file)
        except (ValueError, KeyError, OSError) as error:
            # Any other architecture still predicts, through Keras, only more slowly.
            log.warning("predicting through Keras: %s cannot be folded (%s)",
                        classifier._keras_file, error)
            classifier.keras_model  # noqa: B018  (loads it now, so errors surface at load)
        return classifier

    @property
    def keras_model(self) -> Any:
        """Return the Keras model, read from the saved file on first use after `load`."""
        if self._keras_model is None:
            self._keras_model = _keras().saving.load_model(self._keras_file, compile=False)
        return self._keras_model

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
        if self.folded is not None:
            # Keras masks PAD ids, which skips them; dropping them is the same computation.
            # A sequence left empty is read as [UNK], as `encode` does for an empty text.
            unknown = self.tokenizer.token_to_id("[UNK]")
            ids = [sequence if sequence and PAD_ID not in sequence
                   else [i for i in sequence if i != PAD_ID] or [unknown] for sequence in ids]
        # Sorting by length keeps padding, and so wasted LSTM steps, to a minimum.
        order = np.argsort([len(sequence) for sequence in ids], kind="stable")
        size = self.batch_size if self.folded is None else self.folded_batch_size
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        if self.folded is None:
            for rows in batches:
                probs[rows] = self._keras_pass([ids[row] for row in rows])
            return probs

        def predict_batch(rows: np.ndarray) -> None:
            """Fill the batch's rows of probs."""
            probs[rows] = self.folded([ids[row] for row in rows])

        with _single_blas_thread():
            if self.folded_threads > 1 and len(batches) > 1:
                # NumPy releases the GIL in its loops and BLAS calls, so batches run in parallel.
                with ThreadPoolExecutor(self.folded_threads) as pool:
                    list(pool.map(predict_batch, batches))
            else:
                for rows in batches:
                    predict_batch(rows)
        return probs

    def _keras_pass(self, ids: list[list[int]]) -> np.ndarray:
        """Return the Keras model's probabilities for one batch of id sequences."""
        if self._keras_forward is None:
            import tensorflow as tf

            model = self.keras_model
            # One traced graph for any batch shape: retracing per padded width would cost
            # more than the prediction itself.
            self._keras_forward = tf.function(
                lambda batch: model(batch, training=False),
                input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)
        return self._keras_forward(pad(ids)).numpy()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Return an (n, 3) array of [p_negative, p_neutral, p_positive] for raw tweet texts."""
        return self.predict_ids(self.token_ids(list(texts)))

    def predict(self, texts: list[str]) -> list[str]:
        """Return the predicted label of each raw tweet text."""
        return [LABELS[index] for index in self.predict_proba(texts).argmax(axis=1)]


@functools.cache
def _pyfunc_class() -> type | None:
    """Return the MLflow pyfunc wrapper class, or None where MLflow is not installed."""
    try:
        import mlflow.pyfunc
    except ImportError:  # the serving image may carry the classifier without MLflow
        return None

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

    SentinovaPyfunc.__qualname__ = "SentinovaPyfunc"
    globals()["SentinovaPyfunc"] = SentinovaPyfunc
    return SentinovaPyfunc


def __getattr__(name: str) -> Any:
    # Keras (TensorFlow, ~10 s to import) and MLflow load only when these names are used, so
    # batch prediction from a model folder starts without either.
    if name == "MaskedAttentionPooling":
        return _attention_layer()
    if name == "SentinovaPyfunc":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_classifier(model_uri: str) -> SentimentClassifier:
    """Return the classifier behind an MLflow model URI, a pyfunc folder or a model folder."""
    if not model_uri.strip():
        raise ValueError("the model URI is empty")
    path = Path(model_uri)
    if (path / CONFIG_FILE).is_file():
        return _load_folder(path, model_uri)

    import mlflow

    if not (path / "MLmodel").is_file():
        if "://" not in model_uri and not model_uri.startswith(("models:", "runs:")):
            raise FileNotFoundError(f"no Sentinova model folder or MLflow model at {model_uri}")
        from mlflow.exceptions import MlflowException

        from sentinova.settings import configure_mlflow

        tracking = configure_mlflow()
        try:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        except MlflowException as error:
            # Most often the command runs against an empty home: say where it looked.
            raise LookupError(
                f"{model_uri} is not in the MLflow store at {tracking} ({error.message}); train "
                "one with `sentinova run`, or point SENTINOVA_HOME or MLFLOW_TRACKING_URI at "
                "the store that holds it") from None
        except Exception as error:  # other schemes fail inside MLflow's artifact repositories
            raise LookupError(f"cannot read an MLflow model from {model_uri} "
                              f"({type(error).__name__}: {error})") from None
    # The classifier is read straight from the pyfunc's files: its wrapper and environment
    # checks are not needed to predict.
    try:
        artifacts = mlflow.models.Model.load(path).flavors["python_function"]["artifacts"]
        folder = path / artifacts["model_dir"]["path"]
    except Exception as error:
        raise ValueError(f"{model_uri} is not a Sentinova MLflow model: its MLmodel file cannot "
                         f"be read ({type(error).__name__}: {error})") from None
    return _load_folder(folder, model_uri)


def _load_folder(folder: Path, model_uri: str) -> SentimentClassifier:
    """Return the classifier saved in folder, or say plainly that the folder is damaged."""
    try:
        return SentimentClassifier.load(folder)
    except Exception as error:
        raise ValueError(f"{model_uri} is not a readable Sentinova model ({type(error).__name__}: "
                         f"{error})") from None

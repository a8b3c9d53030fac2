"""Train stage: extract a training snapshot from the warehouse and fit the BiLSTM on it."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from components.ingest import read_tweets
from components.label import canonical_label
from components.model import MaskedAttentionPooling, SentimentClassifier
from components.normalise import normalise_tweet
from components.tokenizer import (checkpoint_embeddings, encode, load_tokenizer, pad,
                                  resolve_checkpoint, train_tokenizer)
from components.train_config import TrainConfig
from components.warehouse import get_warehouse
from sentinova.settings import LABELS


class TrainingSet(BaseModel):
    """A snapshot of the warehouse rows a model trains on, by path, with its content hash."""

    path: str
    rows: int
    sha256: str
    label_counts: dict[str, int]
    excluded: int


class TrainedModel(BaseModel):
    """Where the trained model lies and how its training went."""

    model_dir: str
    tokenizer: str
    warm_start: bool
    best_epoch: int
    history: list[dict[str, float]]
    train_seconds: float
    parameters: int
    augmentation_pairs: int = 0


def snapshot_hash(frame: pd.DataFrame) -> str:
    """Return a content hash of (id, label, text) rows, independent of row order."""
    digest = hashlib.sha256()
    for row in frame.sort_values("id")[["id", "label", "text"]].itertuples(index=False):
        digest.update("\x1f".join(row).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def evaluation_keys(paths: list[str]) -> tuple[set[str], set[str]]:
    """Return the tweet ids and normalised, lowercased texts of evaluation files."""
    ids: set[str] = set()
    texts: set[str] = set()
    for path in paths:
        tweets = read_tweets(path)[0]
        ids.update(tweets["id"])
        texts.update(normalise_tweet(text).lower() for text in tweets["raw_text"])
    return ids, texts


def extract_training_set(out_path: str, exclude_ids: set[str], max_rows: int | None,
                         seed: int, exclude_texts: set[str] | None = None) -> TrainingSet:
    """Write the warehouse's tweets, less evaluation tweets (by id or text), to out_path."""
    tweets = get_warehouse().read_tweets()
    if tweets.empty:
        raise ValueError("the warehouse holds no tweets: run `sentinova etl --input FILE` first")

    # An evaluation tweet loaded under another id is still an evaluation tweet.
    leaked = tweets["text"].str.lower().isin(exclude_texts or set())
    kept = tweets[~tweets["id"].isin(exclude_ids) & ~leaked]
    excluded = len(tweets) - len(kept)
    if max_rows is not None and len(kept) > max_rows:
        kept = kept.sample(n=max_rows, random_state=seed).sort_values("id")
    kept.to_parquet(out_path, index=False)
    return TrainingSet(path=out_path, rows=len(kept), sha256=snapshot_hash(kept),
                       label_counts=kept["label"].value_counts().to_dict(),
                       excluded=excluded)


def build_bilstm(vocab_size: int, embeddings: np.ndarray | None, config: TrainConfig):
    """Return the compiled masked BiLSTM classifier."""
    import keras
    from keras import layers

    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    if embeddings is not None:
        embedding = layers.Embedding(vocab_size, embeddings.shape[1], mask_zero=True,
                                     name="wordpiece_embedding",
                                     trainable=config.train_embeddings)
        embedded = embedding(ids)
        # Assigned, not passed as a Constant initializer: Keras would write the whole matrix
        # into the saved model's JSON config (a 280 MB file, slow to save and load).
        embedding.embeddings.assign(embeddings)
    else:
        embedded = layers.Embedding(vocab_size, config.embedding_dim, mask_zero=True,
                                    name="wordpiece_embedding")(ids)
    x = layers.SpatialDropout1D(config.dropout / 2)(embedded)
    if config.projection_dim:
        # A narrow linear projection in front of the LSTM cuts its per-step cost about threefold.
        x = layers.Dense(config.projection_dim, name="projection")(x)
    sequence = layers.Bidirectional(
        layers.LSTM(config.lstm_units, return_sequences=True), name="bilstm")(x)
    # Mean and attention over the unpadded steps: the mask keeps padding out of both.
    mean = layers.GlobalAveragePooling1D()(sequence)
    attended = MaskedAttentionPooling(name="attention")(sequence)
    x = layers.Concatenate()([mean, attended])
    x = layers.Dropout(config.dropout)(x)
    probs = layers.Dense(len(LABELS), activation="softmax", name="sentiment")(x)

    model = keras.Model(ids, probs, name="sentinova_bilstm")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    return model


def _batches(ids: list[list[int]], labels: np.ndarray, weights: np.ndarray, batch_size: int,
             rng: np.random.Generator):
    """Yield padded batches grouped by length: shuffled, then sorted within large chunks."""
    order = rng.permutation(len(ids))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        rows = sorted(order[start : start + chunk], key=lambda row: len(ids[row]))
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for index in rng.permutation(len(batches)):
        rows = batches[index]
        yield pad([ids[row] for row in rows]), labels[rows], weights[rows]


def macro_recall(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Return recall averaged over the three classes (the SemEval-2017 4A metric)."""
    recalls = [np.mean(predicted[truth == k] == k) for k in range(len(LABELS))
               if (truth == k).any()]
    return float(np.mean(recalls))


def suite_texts(suite: str | None) -> set[str]:
    """Return the lowercased, normalised texts of a behavioural suite (built-in when None)."""
    from components.behaviour import resolve_suite

    return {normalise_tweet(text).lower() for test in resolve_suite(suite).tests
            for case in test.cases for text in case.texts}


def augmentation_rows(config: TrainConfig, tweets: int, suite: str | None,
                      log=print) -> list[tuple[str, str]]:
    """Return the run's augmentation pairs, normalised, with every suite text left out."""
    count = round(config.augmentation_ratio * tweets)
    if not count:
        return []
    from components.behaviour import template_augmentations

    # The suite is a test: a generated sentence that happens to equal one of its texts is dropped.
    excluded = suite_texts(suite) | suite_texts(None)
    pairs = template_augmentations(config.seed, count, excluded)
    log(f"{len(pairs)} template augmentations, none equal to a text of the suite "
        f"({len(excluded)} texts checked)")
    return [(normalise_tweet(text), label) for text, label in pairs]


def train_model(training_set: TrainingSet, validation: str, out_dir: str,
                config: TrainConfig, log=print, suite: str | None = None) -> TrainedModel:
    """Fit the BiLSTM, keep the epoch with the best validation macro recall, save it to out_dir."""
    import keras

    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    frame = pd.read_parquet(training_set.path)
    augmented = augmentation_rows(config, len(frame), suite, log)
    texts = frame["text"].tolist() + [text for text, _ in augmented]
    label_names = frame["label"].tolist() + [label for _, label in augmented]
    labels = np.array([LABELS.index(label) for label in label_names], dtype=np.int32)

    checkpoint = resolve_checkpoint(config.checkpoint)
    tokenizer = load_tokenizer(checkpoint) if checkpoint else train_tokenizer(
        texts, config.vocab_size)
    embeddings = checkpoint_embeddings(checkpoint, tokenizer) if checkpoint else None
    ids = encode(tokenizer, texts, config.max_len)

    # Class weights balance the tweets; augmentation pairs take their class's weight, scaled.
    tweets = len(frame)
    counts = np.bincount(labels[:tweets], minlength=len(LABELS)).astype(float)
    class_weight = (tweets / (len(LABELS) * np.maximum(counts, 1))
                    if config.class_weighting else np.ones(len(LABELS)))
    weights = class_weight[labels].astype(np.float32)
    weights[tweets:] *= config.augmentation_weight

    val_frame = read_tweets(validation)[0]
    val_texts = [normalise_tweet(text) for text in val_frame["raw_text"]]
    val_ids = encode(tokenizer, val_texts, config.max_len)
    val_truth = np.array([LABELS.index(canonical_label(label)) for label in val_frame["label"]])

    model = build_bilstm(tokenizer.get_vocab_size(), embeddings, config)
    classifier = SentimentClassifier(model, tokenizer, config.max_len)
    history, best, best_weights = [], -1.0, None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.optimizer.learning_rate.assign(
            config.learning_rate * config.learning_rate_decay ** (epoch - 1))
        losses = []
        for batch, batch_labels, batch_weights in _batches(ids, labels, weights,
                                                          config.batch_size, rng):
            result = model.train_on_batch(batch, batch_labels, sample_weight=batch_weights,
                                          return_dict=True)
            losses.append(result["loss"])
        recall = macro_recall(val_truth, classifier.predict_ids(val_ids).argmax(axis=1))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                        "val_macro_recall": recall})
        log(f"epoch {epoch}: loss {np.mean(losses):.4f}, validation macro recall {recall:.4f}")
        if recall > best:
            best, best_weights = recall, model.get_weights()
    train_seconds = time.perf_counter() - started

    model.set_weights(best_weights)
    best_epoch = max(history, key=lambda h: h["val_macro_recall"])["epoch"]
    classifier.save(out_dir, {"checkpoint": str(checkpoint) if checkpoint else None,
                              "train_config": config.model_dump()})
    return TrainedModel(model_dir=out_dir, tokenizer=str(checkpoint or "trained-wordpiece"),
                        warm_start=embeddings is not None, best_epoch=best_epoch,
                        history=history, train_seconds=round(train_seconds, 1),
                        parameters=int(model.count_params()),
                        augmentation_pairs=len(augmented))


@task(name="extract-training-set")
def extract_task(out_path: str, exclude_files: list[str], max_rows: int | None,
                 seed: int) -> TrainingSet:
    """Snapshot the warehouse's tweets for training, leaving out every evaluation tweet."""
    ids, texts = evaluation_keys(exclude_files)
    training_set = extract_training_set(out_path, ids, max_rows, seed, texts)
    get_run_logger().info("training snapshot: %d rows (%s), %d excluded, sha256 %s",
                          training_set.rows, training_set.label_counts, training_set.excluded,
                          training_set.sha256[:12])
    return training_set


@task(name="train")
def train_task(training_set: TrainingSet, validation: str, out_dir: str,
               config: TrainConfig, suite: str | None = None) -> TrainedModel:
    """Train the BiLSTM on the snapshot and return where the model was saved."""
    logger = get_run_logger()
    trained = train_model(training_set, validation, out_dir, config, log=logger.info,
                          suite=suite)
    logger.info("trained %d parameters in %.1f s; best epoch %d", trained.parameters,
                trained.train_seconds, trained.best_epoch)
    return trained



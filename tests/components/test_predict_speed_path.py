import json
import os
import subprocess
import sys

import numpy as np
import pytest

from components.model import SentimentClassifier
from components.predict import predict_file
from tests.conftest import REPO, VALIDATION_FILE, read_jsonl

LONG_TWEET = " ".join(f"word{n} delayed flight" for n in range(40))
EDGE_CASES = ["", "ok", LONG_TWEET, "[PAD]", "fine [PAD] thanks", "&amp;amp; @someone http://x.co"]


def _random_weights(model, seed: int) -> None:
    """Give every weight random values wide enough that the probabilities differ per tweet."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])


def _save_model(folder, *, warm_start: bool, recurrent: str = "lstm"):
    """Save a small Sentinova model on the bert-base-uncased WordPiece; return its folder."""
    import keras

    from components.tokenizer import bundled_checkpoint, load_tokenizer
    from components.train import TrainConfig, build_bilstm

    keras.utils.set_random_seed(3)
    tokenizer = load_tokenizer(bundled_checkpoint())
    vocab = tokenizer.get_vocab_size()
    if recurrent == "lstm":
        config = TrainConfig(lstm_units=8, projection_dim=16 if warm_start else 0,
                             embedding_dim=12)
        embeddings = np.zeros((vocab, 24), np.float32) if warm_start else None
        model = build_bilstm(vocab, embeddings, config)
    else:
        from keras import layers

        from components.model import MaskedAttentionPooling

        ids = keras.Input(shape=(None,), dtype="int32")
        x = layers.Embedding(vocab, 12, mask_zero=True, name="wordpiece_embedding")(ids)
        x = layers.Bidirectional(layers.GRU(8, return_sequences=True), name="bilstm")(x)
        x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x),
                                  MaskedAttentionPooling(name="attention")(x)])
        model = keras.Model(ids, layers.Dense(3, activation="softmax", name="sentiment")(x))
    _random_weights(model, seed=11)
    return SentimentClassifier(model, tokenizer, max_len=64).save(folder)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Folders of a warm-started model with a projection and of one with its own embedding."""
    work = tmp_path_factory.mktemp("speed")
    return {"warm-start + projection": _save_model(work / "warm", warm_start=True),
            "own embedding, no projection": _save_model(work / "own", warm_start=False)}


@pytest.fixture(scope="module")
def tweets(shared_data):
    """Three hundred real tweets followed by the edge cases."""
    return [row["rawContent"] for row in read_jsonl(VALIDATION_FILE)[:300]] + EDGE_CASES


def _keras_reference(classifier: SentimentClassifier) -> SentimentClassifier:
    """Return a classifier over the same saved model that predicts through Keras."""
    return SentimentClassifier(classifier.keras_model, classifier.tokenizer, classifier.max_len)


@pytest.mark.parametrize("variant", ["warm-start + projection", "own embedding, no projection"])
def test_folded_path_gives_the_keras_probabilities(saved_models, tweets, variant):
    folded = SentimentClassifier.load(saved_models[variant])
    assert folded.folded is not None

    fast = folded.predict_proba(tweets)
    plain = _keras_reference(folded).predict_proba(tweets)

    assert fast.shape == (len(tweets), 3) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    # Random weights spread the probabilities, so equality is not a near-uniform coincidence.
    assert plain.std(axis=0).min() > 0.01


def test_edge_cases_are_tokenised_as_expected(saved_models):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    empty, one, long, pad_only, pad_inside, _ = classifier.token_ids(EDGE_CASES)
    unknown = classifier.tokenizer.token_to_id("[UNK]")
    assert empty == [unknown] and pad_only == [unknown] and len(one) == 1
    assert len(long) == 64
    assert 0 not in pad_inside and len(pad_inside) == 2


def test_padding_ids_given_directly_are_skipped_like_the_keras_mask(saved_models):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    ids = [[2204, 0, 3462, 0], [2204, 3462], [7592]]

    fast = classifier.predict_ids(ids)

    np.testing.assert_allclose(fast, _keras_reference(classifier).predict_ids(ids), atol=1e-5)
    np.testing.assert_allclose(fast[0], fast[1], atol=1e-6)


def test_an_empty_id_sequence_reads_as_unknown_and_foreign_ids_are_refused(saved_models):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    np.testing.assert_allclose(classifier.predict_ids([[]]), classifier.predict_proba([""]),
                               atol=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        classifier.predict_ids([[5, classifier.tokenizer.get_vocab_size()]])


def test_a_single_tweet_gets_the_probabilities_it_gets_in_a_batch(saved_models, tweets):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    together = classifier.predict_proba(tweets)
    for index in (0, 7, len(tweets) - 4):
        np.testing.assert_allclose(classifier.predict_proba([tweets[index]])[0],
                                   together[index], atol=1e-6)


def test_batches_across_the_folded_batch_size_keep_input_order(saved_models, tweets):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    expected = classifier.predict_proba(tweets)
    classifier.folded_batch_size = 7
    np.testing.assert_allclose(classifier.predict_proba(tweets), expected, atol=1e-6)


def test_an_unfoldable_architecture_falls_back_to_keras(tmp_path):
    folder = _save_model(tmp_path / "gru", warm_start=False, recurrent="gru")
    classifier = SentimentClassifier.load(folder)
    assert classifier.folded is None
    probs = classifier.predict_proba(["great flight", ""])
    np.testing.assert_allclose(probs, _keras_reference(classifier).predict_proba(
        ["great flight", ""]), atol=1e-6)


def test_predict_file_writes_one_line_per_input_line_across_chunks(saved_models, tweets,
                                                                   tmp_path):
    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    # An empty text is an error line of its own (test_train_predict covers it).
    texts = tweets[:5] + [text for text in EDGE_CASES if text]
    lines = [json.dumps({"text": text}) for text in texts]
    lines[3:3] = ["{broken", json.dumps({"id": 9})]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")

    report = predict_file(classifier, str(source), str(tmp_path / "out.jsonl"), chunk_size=3)

    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (report.lines, report.predicted, report.errors) == (len(lines), len(texts), 2)
    assert [row["text"] for row in written] == texts[:3] + [None, None] + texts[3:]
    assert [row.get("error") for row in written[3:5]] == [
        "line 4: invalid JSON", "line 5: no text or rawContent string"]
    predicted = [row for row in written if row["text"] is not None]
    expected = classifier.predict_proba(texts)
    np.testing.assert_allclose([row["probs"] for row in predicted], expected, atol=1e-5)
    assert [row["label"] for row in predicted] == [
        ("negative", "neutral", "positive")[i] for i in expected.argmax(axis=1)]


def test_predict_file_reports_a_tokenising_failure_and_writes_nothing(saved_models, tmp_path):
    class BrokenTokeniser(SentimentClassifier):
        def token_ids(self, texts):
            raise RuntimeError("tokenizer exploded")

    classifier = SentimentClassifier.load(saved_models["warm-start + projection"])
    classifier.__class__ = BrokenTokeniser
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n' * 10)

    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        predict_file(classifier, str(source), str(tmp_path / "out.jsonl"), chunk_size=2)
    assert not (tmp_path / "out.jsonl").exists()


def test_predicting_from_a_model_folder_does_not_import_tensorflow(saved_models):
    script = ("import sys; from components.model import load_classifier; "
              f"c = load_classifier({str(saved_models['warm-start + projection'])!r}); "
              "c.predict_proba(['hello there']); "
              "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_pyfunc_class_pickles_by_reference():
    import cloudpickle

    from components.model import SentinovaPyfunc

    restored = cloudpickle.loads(cloudpickle.dumps(SentinovaPyfunc()))
    assert type(restored) is SentinovaPyfunc
    assert b"load_context" not in cloudpickle.dumps(SentinovaPyfunc())

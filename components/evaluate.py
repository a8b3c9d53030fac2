"""Evaluate stage: macro recall (the benchmark's metric), macro F1, accuracy and confusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from pydantic import BaseModel
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from components.ingest import read_tweets
from components.label import canonical_label
from sentinova.settings import LABELS


class EvalResult(BaseModel):
    """The figures of one model on one labelled file."""

    name: str
    path: str
    rows: int
    macro_recall: float
    macro_f1: float
    accuracy: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]


def eval_name(path: str) -> str:
    """Return the short name an evaluation file is reported under (val, airline, ...)."""
    stem = Path(path).stem.lower()
    if "validation" in stem or stem.startswith("val"):
        return "val"
    return stem.split("_")[0].split("-")[0] or "eval"


def score(name: str, path: str, truth: list[str], predicted: list[str]) -> EvalResult:
    """Return the evaluation figures of predicted labels against gold labels."""
    y_true = np.array([LABELS.index(label) for label in truth])
    y_pred = np.array([LABELS.index(label) for label in predicted])
    classes = list(range(len(LABELS)))
    recalls = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return EvalResult(
        name=name, path=path, rows=len(y_true),
        macro_recall=float(np.mean(recalls)),
        macro_f1=float(f1_score(y_true, y_pred, labels=classes, average="macro",
                                zero_division=0)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        per_class_recall={label: float(r) for label, r in zip(LABELS, recalls)},
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist())


def labelled_texts(path: str) -> tuple[list[str], list[str]]:
    """Return the raw texts and gold labels of a labelled file; unlabelled rows are an error."""
    tweets, quarantined = read_tweets(path)
    labels = [canonical_label(label) for label in tweets["label"]]
    unusable = sum(label not in LABELS for label in labels)
    if unusable or len(quarantined):
        raise ValueError(f"{path}: {unusable + len(quarantined)} rows lack a usable gold label "
                         "or text; an evaluation file must be fully labelled")
    return tweets["raw_text"].tolist(), labels


def evaluate_model(predict, files: list[str]) -> list[EvalResult]:
    """Return the figures of `predict` (texts -> labels) on each labelled file."""
    results, names = [], set()
    for path in files:
        name = eval_name(path)
        while name in names:
            name += "_"
        names.add(name)
        texts, labels = labelled_texts(path)
        results.append(score(name, str(Path(path).resolve()), labels, predict(texts)))
    return results


def results_table(results: list[EvalResult]) -> list[dict[str, object]]:
    """Return one row a file, for the evaluation artifact and the CLI table."""
    return [{"data": r.name, "rows": r.rows, "macro recall": round(100 * r.macro_recall, 1),
             "macro F1": round(100 * r.macro_f1, 1), "accuracy": round(100 * r.accuracy, 1),
             **{f"recall {k}": round(100 * v, 1) for k, v in r.per_class_recall.items()}}
            for r in results]


def confusion_png(result: EvalResult, path: str) -> str:
    """Draw the confusion matrix of a result to a PNG file and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(result.confusion)
    figure, axes = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(LABELS)), LABELS)
    axes.set_yticks(range(len(LABELS)), LABELS)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(f"{result.name}: macro recall {100 * result.macro_recall:.1f}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


@task(name="evaluate")
def evaluate_task(model_dir: str, files: list[str]) -> list[EvalResult]:
    """Evaluate the saved model on each labelled file."""
    from components.model import SentimentClassifier

    classifier = SentimentClassifier.load(model_dir)
    results = evaluate_model(classifier.predict, files)
    for result in results:
        get_run_logger().info("%s: macro recall %.3f, macro F1 %.3f, accuracy %.3f (%d rows)",
                              result.name, result.macro_recall, result.macro_f1,
                              result.accuracy, result.rows)
    return results

"""Speed of `sentinova predict`: the folded NumPy path beside the Keras path, in one run.

    python -m bench.predict_speed --model MODEL_DIR [--lines 100000] [--input FILE.jsonl]

Each path runs in its own child process, so start-up (imports and model load) and peak memory
are its own. The Keras path is the baseline as it stood before folding: the Keras forward pass
over the whole chunk (batches of 1,024) and a serial read -> tokenise -> predict -> write loop.
Without --input the tweets of the shared data files are cycled into a --lines JSONL file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
SHARED_TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets"
PARTS_LINES = 20_000


def build_input(target: Path, lines: int, tweets_dir: Path = SHARED_TWEETS) -> Path:
    """Write `lines` JSONL tweets cycled from the shared tweet files; return the path."""
    import orjson

    texts = []
    for source in sorted(tweets_dir.glob("*.jsonl")):
        with source.open("rb") as handle:
            texts += [text for line in handle
                      if isinstance(text := orjson.loads(line).get("rawContent"), str)]
    if not texts:
        raise FileNotFoundError(f"no tweets with rawContent under {tweets_dir}")
    with target.open("wb") as out:
        for number, text in zip(range(lines), itertools.cycle(texts)):
            out.write(orjson.dumps({"id": str(number), "rawContent": text}) + b"\n")
    return target


def keras_predict_file(classifier, input_path: str, output_path: str,
                       chunk_size: int = 8192) -> dict:
    """Return the figures of the baseline loop: read, tokenise, predict, write, one by one."""
    import numpy as np
    import orjson

    from components.predict import _chunks
    from sentinova.settings import LABELS

    started = time.perf_counter()
    lines = 0
    with open(output_path, "wb") as out:
        for chunk in _chunks(Path(input_path), chunk_size):
            texts = [text for text, _ in chunk if text is not None]
            probs = iter(classifier.predict_proba(texts).astype(np.float64).round(5).tolist())
            for text, error in chunk:
                if error is not None:
                    out.write(orjson.dumps({"text": None, "error": error}) + b"\n")
                    continue
                p = next(probs)
                label = LABELS[max(range(len(LABELS)), key=p.__getitem__)]
                out.write(orjson.dumps({"text": text, "label": label, "probs": p}) + b"\n")
            lines += len(chunk)
    return {"lines": lines, "seconds": time.perf_counter() - started}


def load_path(path: str, model_dir: str):
    """Return the classifier of one path: 'folded' (as `load` gives it) or 'keras'."""
    from components.model import SentimentClassifier, load_classifier

    classifier = load_classifier(model_dir)
    if path == "keras":
        return SentimentClassifier(classifier.keras_model, classifier.tokenizer,
                                   classifier.max_len)
    return classifier


def child_end_to_end(path: str, model_dir: str, input_path: str, output_path: str) -> dict:
    """Return start-up seconds, end-to-end seconds and peak RSS of one path on the file."""
    import_started = time.perf_counter()
    classifier = load_path(path, model_dir)
    startup = time.perf_counter() - STARTED
    load = time.perf_counter() - import_started
    before = resource.getrusage(resource.RUSAGE_SELF)
    if path == "keras":
        run = keras_predict_file(classifier, input_path, output_path)
    else:
        from components.predict import predict_file

        report = predict_file(classifier, input_path, output_path)
        run = {"lines": report.lines, "seconds": report.seconds}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**run, "startup": startup, "import_and_load": load,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "predict_cpu_seconds": (usage.ru_utime + usage.ru_stime
                                    - before.ru_utime - before.ru_stime),
            "peak_rss_mb": usage.ru_maxrss / 1024}


def child_parts(path: str, model_dir: str, input_path: str) -> dict:
    """Return tokenise-only and forward-only rates of one path on the file's first lines."""
    import orjson

    classifier = load_path(path, model_dir)
    with open(input_path, "rb") as handle:
        texts = [orjson.loads(line)["rawContent"]
                 for line in itertools.islice(handle, PARTS_LINES)]
    classifier.predict_ids(classifier.token_ids(texts[:500]))  # warm-up: traces, caches

    started = time.perf_counter()
    ids = classifier.token_ids(texts)
    tokenise = time.perf_counter() - started

    started = time.perf_counter()
    classifier.predict_ids(ids)
    forward = time.perf_counter() - started
    return {"tokenise_per_s": len(texts) / tokenise, "forward_per_s": len(texts) / forward}


def run_child(model: str, *arguments: str) -> dict:
    """Return the JSON figures a child process of this script prints, with its wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.predict_speed", "--model", model, "--child", *arguments],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"child {arguments[:2]} failed: {done.stderr.strip()[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]),
            "wall": time.perf_counter() - started}


def load_average() -> str:
    """Return the 1-minute load average and the core count, as a short string."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def main() -> None:
    """Measure both paths on one file and print their figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or MLflow model URI")
    parser.add_argument("--input", help="JSONL of tweets; default: built from the shared data")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, path, *rest = args.child
        figures = (child_end_to_end(path, args.model, *rest) if kind == "e2e"
                   else child_parts(path, args.model, *rest))
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="sentinova-speed-") as work:
        source = Path(args.input) if args.input else build_input(
            Path(work) / "tweets.jsonl", args.lines)
        small = build_input(Path(work) / "small.jsonl", args.lines // 5)
        print(f"input: {source} ({sum(1 for _ in source.open('rb')):,} lines); "
              f"{load_average()} at start", flush=True)
        results = {}
        for path in ("keras", "folded"):
            end_to_end = run_child(args.model, "e2e", path, str(source), f"{work}/{path}.jsonl")
            parts = run_child(args.model, "parts", path, str(source))
            results[path] = {**parts, **end_to_end}
            print(f"  measured {path} ({load_average()})", flush=True)
        smaller = run_child(args.model, "e2e", "folded", str(small), f"{work}/small-out.jsonl")

    rows = [("end to end, tweets/s", lambda r: f"{r['lines'] / r['seconds']:,.0f}"),
            ("tokenise only, tweets/s", lambda r: f"{r['tokenise_per_s']:,.0f}"),
            ("forward only, tweets/s", lambda r: f"{r['forward_per_s']:,.0f}"),
            ("start-up (imports, load), s", lambda r: f"{r['startup']:.1f}"),
            ("whole process, s", lambda r: f"{r['wall']:.1f}"),
            ("CPU s per 1,000 tweets, all",
             lambda r: f"{1e3 * r['cpu_seconds'] / r['lines']:.3f}"),
            ("  of which predicting",
             lambda r: f"{1e3 * r['predict_cpu_seconds'] / r['lines']:.3f}"),
            ("peak RSS, MB", lambda r: f"{r['peak_rss_mb']:,.0f}")]
    print(f"\n{'':32}{'keras (before)':>16}{'folded (now)':>16}")
    for name, cell in rows:
        print(f"{name:32}{cell(results['keras']):>16}{cell(results['folded']):>16}")
    print(f"\nfolded peak RSS on {smaller['lines']:,} lines: {smaller['peak_rss_mb']:,.0f} MB "
          f"(memory stays flat as the input grows); {load_average()} at the end")


if __name__ == "__main__":
    main()

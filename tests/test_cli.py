import subprocess
import sys

from tests.conftest import REPO


def _sentinova(*args):
    return subprocess.run([sys.executable, "-m", "sentinova.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_help_lists_the_commands():
    result = _sentinova("--help")
    assert result.returncode == 0
    for command in ("run", "etl", "train", "predict"):
        assert command in result.stdout


def test_a_missing_input_file_fails_with_a_one_line_reason(tmp_path):
    result = _sentinova("etl", "--input", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: FileNotFoundError: file not found: {tmp_path / 'missing.jsonl'}"]


def test_predict_with_an_unknown_model_fails_cleanly(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hi"}\n')
    result = _sentinova("predict", "--model", str(tmp_path / "no-model"), "--input", str(source),
                        "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_predict_fails_when_no_line_holds_a_tweet(tmp_path):
    from tests.flows.test_deploy_flow import build_tiny_model

    source = tmp_path / "in.jsonl"
    source.write_text('not json\n{"text": ""}\n')
    result = _sentinova("predict", "--model", str(build_tiny_model(tmp_path / "model")),
                        "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: RuntimeError: no line of {source} held a tweet text")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_an_operations_command_that_fails_exits_non_zero(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "SENTINOVA_WEBHOOK_SECRET"}
    result = subprocess.run([sys.executable, "-m", "sentinova.cli", "sign", "--path",
                             str(tmp_path / "x.jsonl"), "--rows", "3"],
                            capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error")


def test_a_bad_setting_is_one_line_and_help_still_works():
    import os

    env = {**os.environ, "SENTINOVA_WAREHOUSE": "postgres"}
    assert subprocess.run([sys.executable, "-m", "sentinova.cli", "--help"], env=env,
                          capture_output=True, cwd=REPO, timeout=300).returncode == 0
    result = subprocess.run([sys.executable, "-m", "sentinova.cli", "predict", "--input", "x",
                             "--output", "y"], env=env, capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: ValidationError: warehouse: Input should be 'duckdb' or 'snowflake'")


def test_prefect_console_shows_a_failure_without_its_traceback(monkeypatch):
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    from sentinova.cli import _quiet_prefect_tracebacks

    monkeypatch.delenv("SENTINOVA_DEBUG", raising=False)
    handler = PrefectConsoleHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("sentinova.test.console")
    logger.addHandler(handler)
    try:
        _quiet_prefect_tracebacks()
        try:
            raise ValueError("bad input")
        except ValueError:
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1,
                                       "task failed: %s", ("bad input",), sys.exc_info())
        shown = handler.format(record)
        kept = logging.Formatter().format(record)
    finally:
        logger.removeHandler(handler)

    assert shown == "ERROR task failed: bad input"
    # Only the console is spared: the record keeps its traceback for every other handler.
    assert "Traceback" in kept and "ValueError: bad input" in kept


def test_a_missing_suite_file_fails_before_anything_starts(tmp_path, shared_data):
    from tests.conftest import VALIDATION_FILE

    result = _sentinova("train", "--validation", str(VALIDATION_FILE),
                        "--suite", str(tmp_path / "no-suite.json"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: FileNotFoundError: file not found: {tmp_path / 'no-suite.json'}")


def test_predict_refuses_an_empty_input_and_an_empty_model(tmp_path):
    from tests.flows.test_deploy_flow import build_tiny_model

    source = tmp_path / "in.jsonl"
    source.write_text("")
    empty_input = _sentinova("predict", "--model", str(build_tiny_model(tmp_path / "m")),
                             "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    source.write_text('{"text": "hi"}\n')
    empty_model = _sentinova("predict", "--model", "", "--input", str(source),
                             "--output", str(tmp_path / "out.jsonl"))

    assert empty_model.returncode == 1
    assert empty_model.stderr.strip().splitlines()[-1] == (
        "error: ValueError: the model URI is empty")
    assert empty_input.returncode == 1
    assert empty_input.stderr.strip().splitlines()[-1] == (
        f"error: RuntimeError: no line of {source} held a tweet text: it is empty")

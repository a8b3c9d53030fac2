"""Load-test `sentinova serve` on loopback, with micro-batching on and off, and print the figures.

    python bench/serve_load.py --model models:/sentinova-sentiment@champion --duration 15

Each mode starts its own `sentinova serve` process on a free loopback port and runs two loads
of single-tweet JSON requests over keep-alive connections, each bounded in time:
- saturation: every connection sends its next request as soon as the answer is back
  (wrk when it is installed, else the built-in asyncio client);
- paced: the built-in asyncio client sends at a fixed total rate and measures each latency
  from the moment the request was due, so a stalled server cannot hide its queue.
Figures: requests/s, latency percentiles in ms, and counts of 5xx, other non-2xx and socket
errors. The run with micro-batching off is the baseline measured beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TWEETS = REPO.parent / "shared" / "data" / "tweets" / "airline_sentiment.jsonl"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def read_tweets(path: Path, count: int) -> list[str]:
    """Return up to count distinct tweet texts from a JSONL file (rawContent or text)."""
    tweets: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            text = record.get("rawContent") or record.get("text")
            if text and text not in tweets:
                tweets.append(text)
            if len(tweets) >= count:
                break
    if not tweets:
        raise SystemExit(f"error: no tweets in {path}")
    return tweets


def start_server(model: str, port: int, micro_batch: bool, extra: list[str],
                 log_path: Path) -> subprocess.Popen:
    """Start `sentinova serve` on loopback and return once /ping answers 200."""
    command = [sys.executable, "-m", "sentinova.cli", "serve", "--model", model,
               "--host", LOOPBACK, "--port", str(port),
               "--micro-batch" if micro_batch else "--no-micro-batch", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise SystemExit(f"error: the server exited ({process.returncode}): {tail[0]}")
        try:
            if httpx.get(f"http://{LOOPBACK}:{port}/ping", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit("error: the server did not answer /ping within 300 s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def request_bytes(port: int, tweet: str) -> bytes:
    body = json.dumps({"inputs": [tweet]}).encode()
    head = (f"POST /invocations HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response and return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(port: int, requests: list[bytes], offset: int, stride: int,
                      start: float, stop: float, grace: float, period: float | None,
                      latencies: list[float], statuses: dict[str, int]) -> None:
    """Drive one keep-alive connection: closed loop (period None) or paced by a schedule."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    index = offset
    try:
        while True:
            now = time.perf_counter()
            if period is None:
                due = now
            else:
                due = start + index * period
                if due > now:
                    await asyncio.sleep(due - now)
            # Due requests still unsent this long after the run count as dropped: the bench
            # stays bounded in time even when the server falls far behind the pace.
            if due >= stop or now >= stop + grace:
                return
            writer.write(requests[index % len(requests)])
            try:
                status = await _read_status(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                statuses["socket"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                index += stride
                continue
            latencies.append(time.perf_counter() - due)
            kind = "2xx" if status < 300 else "5xx" if status >= 500 else "other"
            statuses[kind] += 1
            index += stride
    finally:
        writer.close()


async def _python_load(port: int, tweets: list[str], connections: int, duration: float,
                       rate: float | None) -> dict:
    requests = [request_bytes(port, tweet) for tweet in tweets]
    latencies: list[float] = []
    statuses = {"2xx": 0, "5xx": 0, "other": 0, "socket": 0}
    start = time.perf_counter() + 0.05
    stop = start + duration
    period = None if rate is None else 1.0 / rate
    grace = min(duration, 10.0)
    await asyncio.gather(*(
        _connection(port, requests, k, connections, start, stop, grace, period, latencies,
                    statuses)
        for k in range(connections)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0
    answered = int(ms.size) + statuses["socket"]
    dropped = max(0, round(rate * duration) - answered) if rate is not None else 0
    return {"requests": int(ms.size), "seconds": round(elapsed, 2),
            "rps": round(ms.size / elapsed, 1), "dropped": dropped,
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2),
            "errors_5xx": statuses["5xx"], "errors_other": statuses["other"],
            "socket_errors": statuses["socket"]}


def python_load(port: int, tweets: list[str], connections: int, duration: float,
                rate: float | None) -> dict:
    """Run the built-in asyncio load generator and return its figures."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_python_load(port, tweets, connections, duration, rate))


WRK_SCRIPT = """
local bodies = {%(bodies)s}
local threads = {}
local counter = 0
function setup(thread) table.insert(threads, thread) end
function init(args) errors_5xx = 0; errors_other = 0 end
function request()
  counter = counter + 1
  return wrk.format("POST", "/invocations", {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
function response(status, headers, body)
  if status >= 500 then errors_5xx = errors_5xx + 1
  elseif status >= 300 then errors_other = errors_other + 1 end
end
function done(summary, latency, requests)
  local e5, eo = 0, 0
  for _, t in ipairs(threads) do e5 = e5 + t:get("errors_5xx"); eo = eo + t:get("errors_other") end
  local s = summary.errors
  io.write(string.format("WRK_FIGURES %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e5, eo,
    s.connect + s.read + s.write + s.timeout))
end
"""


def wrk_load(port: int, tweets: list[str], connections: int, duration: float) -> dict:
    """Run wrk in a closed loop and return its figures."""
    bodies = ", ".join(f"[==[{json.dumps({'inputs': [t]})}]==]" for t in tweets
                       if "]==]" not in t)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"bodies": bodies})
    try:
        result = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s",
             "--timeout", "5s", "-s", script.name, f"http://{LOOPBACK}:{port}/invocations"],
            capture_output=True, text=True, timeout=duration + 60, check=True)
    finally:
        os.unlink(script.name)
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("WRK_FIGURES "))
    names = ["requests", "us", "p50", "p90", "p99", "max", "e5", "eo", "socket"]
    raw = dict(zip(names, map(int, line.split()[1:]), strict=True))
    seconds = raw["us"] / 1e6
    return {"requests": raw["requests"], "seconds": round(seconds, 2),
            "rps": round(raw["requests"] / seconds, 1),
            "p50_ms": raw["p50"] / 1000, "p90_ms": raw["p90"] / 1000,
            "p99_ms": raw["p99"] / 1000, "max_ms": raw["max"] / 1000,
            "errors_5xx": raw["e5"], "errors_other": raw["eo"], "socket_errors": raw["socket"],
            "dropped": 0}


def print_table(rows: list[dict]) -> None:
    columns = ["mode", "load", "generator", "requests", "rps", "p50_ms", "p90_ms", "p99_ms",
               "max_ms", "errors_5xx", "errors_other", "socket_errors", "dropped"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="MLflow model URI or model folder (default: the champion)")
    parser.add_argument("--tweets", type=Path, default=DEFAULT_TWEETS,
                        help="JSONL of tweets to send (rawContent or text)")
    parser.add_argument("--distinct", type=int, default=500, help="distinct tweets to cycle")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load run")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced run: requests/s")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="saturation load generator (paced runs use the built-in one)")
    parser.add_argument("--modes", default="on,off",
                        help="micro-batching modes to run: on, off or on,off")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds of unmeasured load")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("serve_args", nargs="*",
                        help="extra `sentinova serve` options after --, e.g. -- --max-batch 32")
    args = parser.parse_args()

    if args.duration > 120 or args.connections > 256:
        raise SystemExit("error: keep runs bounded: --duration <= 120, --connections <= 256")
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from sentinova.settings import get_settings

        settings = get_settings()
        args.model = f"models:/{settings.model_name}@{settings.champion_alias}"
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    tweets = read_tweets(args.tweets, args.distinct)

    rows = []
    with tempfile.TemporaryDirectory(prefix="sentinova-bench-") as scratch:
        for mode in args.modes.split(","):
            port = free_port()
            label = f"micro-batching {mode}"
            print(f"starting the server ({label}) on port {port} ...", file=sys.stderr)
            process = start_server(args.model, port, mode == "on", args.serve_args,
                                   Path(scratch) / f"serve-{mode}.log")
            try:
                python_load(port, tweets, args.connections, args.warm_up, None)
                if generator == "wrk":
                    saturation = wrk_load(port, tweets, args.connections, args.duration)
                else:
                    saturation = python_load(port, tweets, args.connections, args.duration, None)
                rows.append({"mode": label, "load": "saturation", "generator": generator,
                             **saturation})
                paced = python_load(port, tweets, args.connections, args.duration, args.rate)
                rows.append({"mode": label, "load": f"paced {args.rate:g}/s",
                             "generator": "python", **paced})
            finally:
                stop_server(process)

    print(f"\nmodel {args.model}; {args.connections} connections, {args.duration:g} s a run, "
          f"{os.cpu_count()} CPUs, single-tweet JSON requests on loopback")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""`aitk serve` under load, on loopback: fraud (one transaction per request) and chatbot (one
message per request) at 1, 8 and 64 concurrent clients; requests/s and p50/p99 latency end to end,
beside the in-process predictor on the same records in the same run (one record per call, and
batched). Bundles are trained on each use case's sample data (speed, not accuracy, is measured).

    python benchmarks/serve.py [--clients 1,8,64] [--requests 2000] [--seconds 10] [--soak 100000] [--workers 2] [--quantize int8]

The load comes from wrk (a C HTTP load generator, Debian's `wrk`; `make bench` installs it), one
thread holding the clients' keep-alive connections, so that the clients, which share the cores
with the server, cost it little. Each level runs --seconds; --soak N then sends N more from 64
clients, in rounds of --seconds, the server's memory (RSS) read after each round (its p50 is the
rounds' median p50, its p99 the worst round's). --workers W adds a server of W worker
processes (`aitk serve --workers W`) at the most clients, and the soak runs on it; a server's
RSS and CPU time are those of all its processes. --quantize int8 trains the bundles with their
int8 variant and runs it, in process and served. The in-process
rows predict --requests records, or what --seconds allows. "uvicorn alone" answers the same
requests with a fixed answer on the same stack: what HTTP costs before any JSON, batching or model. The server's CPU time per request is
shown beside the in-process predictor's per record (a fairer measure than requests/s on cores other
jobs share). The in-process batched rate is measured again at the end, to show how much the
machine's load moved during the run."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import PYTHON, markdown_table, trained_usecase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients per level, comma-separated")
    parser.add_argument("--requests", type=int, default=2000, help="records per in-process row at most")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per level (and per soak round, per in-process row at most)")
    parser.add_argument("--only", choices=("fraud", "chatbot"), help="one use case")
    parser.add_argument("--max-wait-ms", default="2", help="the server's --max-wait-ms")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="then N more requests from 64 clients (memory over a long run)")
    parser.add_argument("--workers", default="2", help="worker process counts to add at the most clients, comma-separated (\"\": none)")
    parser.add_argument("--quantize", choices=("int8",), help="run the bundles' int8 variant (trained with it)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/serve.py needs wrk, an HTTP load generator: apt-get install wrk (`make bench` installs it)")
    levels = [int(c) for c in args.clients.split(",")]
    rows, curves = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else ["fraud", "chatbot"]:
            workers = [int(w) for w in args.workers.split(",") if w]
            table, curve = bench(name, Path(tmp) / name, levels, args.requests, args.seconds, args.max_wait_ms, args.soak, workers, args.quantize)
            rows += table
            curves += [f"{name} server RSS over the soak (requests: MB): {curve}"] if curve else []
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; loopback HTTP/1.1 keep-alive, the clients in wrk (one thread), "
          "the server in another process; CPU ms: the server's (or the in-process predictor's) CPU time per request (record)\n")
    print(markdown_table(["model", "how", "requests", "req/s", "p50 ms", "p99 ms", "CPU ms", "errors", "server RSS MB"], rows))
    print("\n".join(["", *curves]) if curves else "")


def bench(name: str, work: Path, levels: list[int], max_records: int, seconds: float, max_wait_ms: str, soak: int,
          workers: list[int], quantize: str | None) -> tuple[list[list], str]:
    """The rows of one use case's table, and the server's RSS curve over the soak."""
    from applied_aitk.runtime import Runtime

    usecase, bundle, sample = trained_usecase(name, work, variants=[quantize] if quantize else [])
    records = _records(name, sample)
    bodies = work / "bodies.jsonl"  # one request body a line, for wrk
    bodies.write_text("".join(json.dumps({"records": [record]}) + "\n" for record in records))
    predictor = usecase.load(bundle, Runtime(device="cpu", spinning=False, variant=quantize))  # as `aitk serve` runs it
    batched = f"in-process, batches of {usecase.batch_size}"
    label = f"{name} ({quantize})" if quantize else name
    rows = [[label, "in-process, 1 record per call", *_in_process(predictor, records, 1, max_records, seconds), ""],
            [label, batched, *_in_process(predictor, records, usecase.batch_size, max_records, seconds), ""]]
    command = [PYTHON, "-c", "from applied_aitk.cli import main; main()", "serve", str(bundle.path), "--device", "cpu", "--max-wait-ms", max_wait_ms,
               *(["--quantize", quantize] if quantize else [])]
    curve, answer, url, counts = [], b"", f"/v1/{name}/predict", [1, *workers]
    for count in counts:
        server, base = _start(command + ["--workers", str(count)], "/readyz")
        try:
            before = _rss_mb(server.pid)
            answer = httpx.post(base + url, json={"records": records[:1]}).content
            how = "`aitk serve`" if count == 1 else f"`aitk serve --workers {count}`"
            for clients in levels if count == 1 else levels[-1:]:
                rows.append([label, f"{how}, {clients} clients", *_level(server.pid, base + url, bodies, clients, seconds), f"{before:.0f} -> {_rss_mb(server.pid):.0f}"])
            if soak and count == counts[-1]:  # the soak on the last server (the most workers asked for)
                rows.append(_soak(label, how, server.pid, base + url, bodies, soak, seconds, curve))
        finally:
            server.terminate()
            server.wait(60)
    rows.append([label, f"uvicorn alone, a fixed answer, {max(levels)} clients", *_http_floor(bodies, answer, max(levels), seconds), ""])
    rows += [[label, f"uvicorn alone, a fixed answer, {count} workers, {max(levels)} clients", *_http_floor(bodies, answer, max(levels), seconds, count), ""]
             for count in workers]
    rows.append([label, f"{batched}, again", *_in_process(predictor, records, usecase.batch_size, max_records, seconds), ""])
    return rows, ", ".join(f"{n:,}: {mb:.0f}" for n, mb in _points(curve))


def _soak(label: str, how: str, pid: int, url: str, bodies: Path, soak: int, seconds: float, curve: list) -> list:
    """The soak's row: ``soak`` requests from 64 clients in rounds of ``seconds``, the server's RSS
    appended to ``curve`` after each round."""
    totals, curve[:] = [0, 0.0, [], [], 0.0, 0], [(0, _rss_mb(pid))]
    while totals[0] < soak:
        done, took, p50, p99, cpu, errors = _wrk(pid, url, bodies, 64, seconds)
        totals = [totals[0] + done, totals[1] + took, totals[2] + [p50], totals[3] + [p99], totals[4] + cpu, totals[5] + errors]
        curve.append((totals[0], _rss_mb(pid)))
        print(f"{label} soak: {totals[0]:,} requests, server RSS {curve[-1][1]:.0f} MB", file=sys.stderr, flush=True)
    done, took, p50s, p99s, cpu, errors = totals
    return [label, f"{how}, 64 clients, soak", done, f"{done / took:,.0f}", f"{statistics.median(p50s):.2f}", f"{max(p99s):.2f}",
            f"{1000 * cpu / done:.2f}", errors, f"{curve[0][1]:.0f} -> {curve[-1][1]:.0f}"]


def _points(curve: list[tuple[int, float]], most: int = 12) -> list[tuple[int, float]]:
    """About ``most`` evenly spaced points of the curve, its first and last included."""
    step = max(1, -(-(len(curve) - 1) // (most - 1)))
    return curve[:-1:step] + curve[-1:]


def _level(pid: int, url: str, bodies: Path, clients: int, seconds: float) -> list:
    done, took, p50, p99, cpu, errors = _wrk(pid, url, bodies, clients, seconds)
    return [done, f"{done / took:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{1000 * cpu / max(done, 1):.2f}", errors]


def _wrk(pid: int, url: str, bodies: Path, clients: int, seconds: float) -> tuple[int, float, float, float, float, int]:
    """(requests answered, seconds, p50 ms, p99 ms, the server's CPU seconds, errors) of ``clients``
    connections posting the bodies in turn for ``seconds`` (wrk, benchmarks/serve_load.lua);
    an error is an answer other than 200, an error row, or a broken connection."""
    script = Path(__file__).with_name("serve_load.lua")
    cpu = _cpu_seconds(pid)
    done = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url],
                          capture_output=True, text=True, env={**os.environ, "AITK_BODIES": str(bodies)}, check=True)
    cpu = _cpu_seconds(pid) - cpu
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (result["requests"], result["seconds"], result["p50_us"] / 1000, result["p99_us"] / 1000, cpu,
            result["bad"] + result["socket_errors"])


def _records(name: str, sample) -> list[dict]:
    """The sample's records as a client sends them: a table row as an object, its numbers as JSON numbers."""
    if name == "fraud":
        with open(sample.predict[0], newline="") as f:
            return [{column: _number(cell) for column, cell in row.items()} for row in csv.DictReader(f)]
    lines = [json.loads(line) for line in Path(sample.predict[0]).read_text().splitlines() if line.strip()]
    return [line for line in lines if "text" in line]


def _number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def _in_process(predictor, records: list[dict], batch: int, max_records: int, max_seconds: float) -> list:
    """(records, records/s, p50 ms, p99 ms, errors) of decode + predict in this process, a call's latency."""
    from applied_aitk.batch import predict_records

    items = [predictor.from_json(records[i % len(records)], str(i)) for i in range(max_records)]
    latencies, errors, done = [], 0, 0
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(items), batch):
        if time.perf_counter() - started > max_seconds:
            break
        t = time.perf_counter()
        rows = predict_records(predictor, items[i:i + batch])
        latencies.append(time.perf_counter() - t)
        errors += sum(1 for row in rows if row.get("error"))
        done += len(rows)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return [done, f"{done / seconds:,.0f}", _ms(latencies, 50), _ms(latencies, 99), f"{1000 * cpu / max(done, 1):.2f}", errors]


FIXED_ANSWER = """
import os, sys, uvicorn
from applied_aitk.serve.protocol import OneWriteHTTP  # the server's HTTP protocol: an answer in one write
answer = os.environ["AITK_ANSWER"].encode()
async def app(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
if __name__ == "__main__":
    uvicorn.run("fixed_answer:app", port=int(sys.argv[1]), workers=int(sys.argv[2]), log_level="warning", access_log=False, lifespan="off", http=OneWriteHTTP)
"""


def _http_floor(bodies: Path, answer: bytes, clients: int, seconds: float, workers: int = 1) -> list:
    """The same requests answered by uvicorn alone, on the same stack (uvloop, httptools, OneWriteHTTP), with a
    fixed answer the size of the model's: what HTTP costs before any JSON, batching or model."""
    script = bodies.with_name("fixed_answer.py")  # a module: uvicorn's workers import the app by name
    script.write_text(FIXED_ANSWER)
    server, url = _start([PYTHON, str(script), "PORT", str(workers)], "/", {"AITK_ANSWER": answer.decode()})
    try:
        return _level(server.pid, url + "/", bodies, clients, seconds)
    finally:
        server.terminate()
        server.wait(30)


def _start(command: list[str], probe: str, env: dict[str, str] | None = None):
    """A server started as ``command`` (its "--port PORT", or a "PORT" argument, on a free port),
    once ``probe`` answers."""
    port = str(_free_port())
    command = [port if part == "PORT" else part for part in command] + ([] if "PORT" in command else ["--port", port])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + probe, timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not become ready: {' '.join(command[:4])}")


def _ms(latencies: list[float], percentile: int) -> str:
    if len(latencies) < 2:
        return f"{latencies[0] * 1000:.2f}" if latencies else ""
    return f"{statistics.quantiles(latencies, n=100, method='inclusive')[percentile - 1] * 1000:.2f}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's worker processes)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid] + [p for child in children for p in _tree(child)]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants so far (their threads included;
    a descendant that ended before counts no more)."""
    total = 0
    for process in _tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """The resident memory of a process and its descendants, MB."""
    total = 0
    for process in _tree(pid):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


if __name__ == "__main__":
    main()

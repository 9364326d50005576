"""`aitk serve` under load, on loopback: fraud (one transaction per request) and chatbot (one
message per request) at 1, 8 and 64 concurrent clients; requests/s and p50/p99 latency end to end,
beside the in-process predictor on the same records in the same run (one record per call, and
batched). Bundles are trained on each use case's sample data (speed, not accuracy, is measured).

    python benchmarks/serve.py [--clients 1,8,64] [--requests 2000] [--seconds 20] [--soak 100000]

Each level stops after --requests requests or --seconds, whichever comes first; --soak N then
sends N more from 64 clients. The server's memory (RSS) is read before and after each level, its
CPU time per request beside the in-process predictor's per record (a fairer measure than
requests/s on cores other jobs share). The in-process batched rate is measured again at the end,
to show how much the machine's load moved during the run."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import PYTHON, markdown_table, trained_usecase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients per level, comma-separated")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=20, help="seconds per level at most")
    parser.add_argument("--only", choices=("fraud", "chatbot"), help="one use case")
    parser.add_argument("--max-wait-ms", default="2", help="the server's --max-wait-ms")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="then N more requests from 64 clients (memory over a long run)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else ["fraud", "chatbot"]:
            rows += bench(name, Path(tmp) / name, levels, args.requests, args.seconds, args.max_wait_ms, args.soak)
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; loopback HTTP/1.1 keep-alive, the clients in one process (asyncio on uvloop), "
          "the server in another; CPU ms: the server's (or the in-process predictor's) CPU time per request (record)\n")
    print(markdown_table(["model", "how", "requests", "req/s", "p50 ms", "p99 ms", "CPU ms", "errors", "server RSS MB"], rows))


def bench(name: str, work: Path, levels: list[int], max_requests: int, max_seconds: float, max_wait_ms: str, soak: int) -> list[list]:
    from applied_aitk.runtime import Runtime

    usecase, bundle, sample = trained_usecase(name, work)
    records = _records(name, sample)
    predictor = usecase.load(bundle, Runtime(device="cpu", spinning=False))  # as `aitk serve` runs it
    batched = f"in-process, batches of {usecase.batch_size}"
    rows = [[name, "in-process, 1 record per call", *_in_process(predictor, records, 1, max_requests, max_seconds), ""],
            [name, batched, *_in_process(predictor, records, usecase.batch_size, max_requests, max_seconds), ""]]
    server, url = _start(bundle.path, max_wait_ms)
    try:
        before = _rss_mb(server.pid)
        runs = [(f"{c} clients", c, max_requests, max_seconds) for c in levels] + ([("64 clients, soak", 64, soak, 3600)] if soak else [])
        for label, clients, budget, seconds in runs:
            cpu = _cpu_seconds(server.pid)
            done, took, latencies, errors = _run(_load(url + f"/v1/{name}/predict", records, clients, budget, seconds))
            cpu = _cpu_seconds(server.pid) - cpu
            rows.append([name, f"`aitk serve`, {label}", done,
                         f"{done / took:,.0f}", f"{_ms(latencies, 50)}", f"{_ms(latencies, 99)}", f"{1000 * cpu / max(done, 1):.2f}",
                         errors, f"{before:.0f} -> {_rss_mb(server.pid):.0f}"])
    finally:
        server.terminate()
        server.wait(30)
    rows.append([name, f"{batched}, again", *_in_process(predictor, records, usecase.batch_size, max_requests, max_seconds), ""])
    return rows


def _run(coroutine):
    """The load's event loop: uvloop's where installed, so that the clients, which share the cores
    with the server, cost as little as a compiled load generator's would."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _records(name: str, sample) -> list[dict]:
    if name == "fraud":
        with open(sample.predict[0], newline="") as f:
            return list(csv.DictReader(f))
    lines = [json.loads(line) for line in Path(sample.predict[0]).read_text().splitlines() if line.strip()]
    return [line for line in lines if "text" in line]


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


def _start(bundle: Path, max_wait_ms: str):
    import httpx

    port = _free_port()
    server = subprocess.Popen([PYTHON, "-c", "from applied_aitk.cli import main; main()", "serve", str(bundle), "--port", str(port),
                               "--device", "cpu", "--max-wait-ms", max_wait_ms], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become ready")


async def _load(url: str, records: list[dict], clients: int, max_requests: int, max_seconds: float):
    """``clients`` connections, each posting one record per request (HTTP/1.1 keep-alive) until the
    budget is spent. A minimal asyncio client, so that the client's own cost stays small."""
    host, port, path = _split(url)
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                body = json.dumps({"records": [records[sent % len(records)]]}).encode()
                sent += 1
                t = time.perf_counter()
                writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (path.encode(), host.encode(), len(body), body))
                status, answer = await _response(reader)
                latencies.append(time.perf_counter() - t)
                if status != 200 or json.loads(answer)["rows"][0].get("error"):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), time.perf_counter() - started, latencies, errors


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def _split(url: str) -> tuple[str, int, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname, parts.port, parts.path


def _ms(latencies: list[float], percentile: int) -> str:
    if len(latencies) < 2:
        return f"{latencies[0] * 1000:.2f}" if latencies else ""
    return f"{statistics.quantiles(latencies, n=100, method='inclusive')[percentile - 1] * 1000:.2f}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()

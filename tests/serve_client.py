"""Helpers for the `aitk serve` tests: an in-process app for a bundle, and batch `predict`'s rows to compare with."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from conftest import SLIM_AITK, WITHOUT_TRAINING


@contextmanager
def client(*bundles: Path | str, api_key: str | None = None, **limits: Any):
    """A FastAPI TestClient on an app serving ``bundles`` on the CPU (lifespan started)."""
    from fastapi.testclient import TestClient

    from applied_aitk.runtime import Runtime
    from applied_aitk.serve import Limits, build_app

    app = build_app([str(b) for b in bundles], Runtime(device="cpu"), Limits(**limits), api_key)
    with TestClient(app) as test_client:
        yield test_client


def batch_rows(usecase: str, bundle: Path, inputs: list[Path], out: Path, *options: str) -> list[dict[str, Any]]:
    """The rows `aitk USECASE predict` writes for ``inputs`` (exit 0 or 3), run as in a slim install."""
    done = subprocess.run([*SLIM_AITK, usecase, "predict", str(bundle), *map(str, inputs), "--out", str(out), "--device", "cpu", *options],
                          capture_output=True, text=True)
    assert done.returncode in (0, 3), done.stderr
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


SERVE_ONCE = """
import json
from fastapi.testclient import TestClient
from applied_aitk.runtime import Runtime
from applied_aitk.serve import build_app
model, bundle, body = sys.argv[1:]
with TestClient(build_app([bundle], Runtime(device="cpu"))) as client:
    response = client.post(f"/v1/{model}/predict", content=body, headers={"content-type": "application/json"})
print(json.dumps(response.json()))
"""


def slim_served_rows(model: str, bundle: Path, records: list[Any]) -> list[dict[str, Any]]:
    """The rows `aitk serve BUNDLE` answers ``records`` with, served in a subprocess as in a slim
    install (the train-only packages hidden)."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINING + SERVE_ONCE, model, str(bundle), json.dumps({"records": records})],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["rows"]


def served_rows(test_client, model: str, records: list[Any]) -> list[dict[str, Any]]:
    response = test_client.post(f"/v1/{model}/predict", content=json.dumps({"records": records}), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without their ids, and errors without the record id they start with (a file:line in
    batch predict, the position in the request when served)."""
    return [{k: _unprefixed(v, row["id"]) if k == "error" else v for k, v in row.items() if k != "id"} for row in rows]


def _unprefixed(error: str | None, record_id: str) -> str | None:
    for prefix in (f"{record_id}: ", f"records[{record_id}]: "):
        if error and error.startswith(prefix):
            return error[len(prefix):]
    return error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args: str, env: dict[str, str] | None = None, ready_timeout: float = 60) -> Iterator[tuple[subprocess.Popen, str]]:
    """`aitk serve ARGS` in a subprocess on a free port, as in a slim install; yields (process, base URL)
    once /readyz answers."""
    import httpx

    port = free_port()
    process = subprocess.Popen([*SLIM_AITK, "serve", *args, "--port", str(port), "--device", "cpu"], env={**os.environ, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:  # SIGTERM first: a server on Ray stops its Ray processes too
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

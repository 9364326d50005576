"""`aitk serve` on the example plugin's bundle: the rows batch predict writes, limits and errors as
4xx JSON naming the field, 503 on a full queue, the API key, metrics, dynamic batching, SIGTERM
draining in a real uvicorn, and no torch on the serving path."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest
from serve_client import batch_rows, client, free_port, server, served_rows, slim_served_rows, without_ids


@pytest.fixture(scope="module")
def rows(wine, tmp_path_factory) -> dict:
    """The predict CSV with one bad row appended, its rows as JSON records, and batch predict's rows."""
    root = tmp_path_factory.mktemp("serve-wine")
    lines = (wine["data"] / "predict.csv").read_text().splitlines()[:40]
    bad = lines[1].split(",")
    bad[0] = "lots"
    (root / "in.csv").write_text("\n".join([*lines, ",".join(bad)]) + "\n")
    records = list(csv.DictReader(open(root / "in.csv", newline="")))
    first = {k: float(v) for k, v in records[0].items()}
    column = next(iter(first))
    bad = [[1, 2], {k: v for k, v in first.items() if k != column}, {**first, column: True}, {**first, column: [1, 2]},
           {**first, column: {"v": 1}}, {**first, column: 1e39}, {**first, column: None}, {**first, column: "lots"}]
    (root / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in [first, *bad]) + "\n")
    batch = batch_rows("wine", wine["bundle"], [root / "in.csv", root / "bad.jsonl"], root / "out.jsonl")
    return {"records": records, "batch": batch[:len(records)], "bad": bad, "bad_batch": batch[len(records) + 1:]}


def test_predict_returns_the_rows_batch_predict_writes(wine, rows):
    with client(wine["bundle"]) as c:
        served = served_rows(c, "wine", rows["records"])
        one = served_rows(c, "wine", rows["records"][:1])
    assert without_ids(served) == without_ids(rows["batch"])
    assert served[-1]["error"] == f"records[{len(served) - 1}]: field 'alcohol': 'lots' is not a number"
    assert [row["id"] for row in served] == [str(i) for i in range(len(served))]
    assert without_ids(one) == without_ids(rows["batch"][:1])
    assert slim_served_rows("wine", wine["bundle"], rows["records"]) == served


def test_bad_records_get_the_error_rows_batch_predict_writes_for_them(wine, rows):
    """Not an object, a field missing, true/false, a list, an object, too large, null, text: each
    record's error row as batch `predict` writes it for the same JSON line."""
    with client(wine["bundle"]) as c:
        served = served_rows(c, "wine", rows["bad"])
    assert without_ids(served) == without_ids(rows["bad_batch"])
    assert all(row["error"] for row in served) and len(served) == 8


def test_models_probes_and_docs(wine):
    with client(wine["bundle"]) as c:
        models = c.get("/v1/models").json()["models"]
        assert [m["name"] for m in models] == ["wine"] and models[0]["provider"] == "CPUExecutionProvider"
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        assert "/v1/{model}/predict" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200


@pytest.mark.parametrize("body, status, field", [
    (b"{not json", 400, "body"),
    (b"not json", 400, "body"),
    (b'{"records": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "body"),  # nested deeper than JSON parsers go: was a 500 (RecursionError)
    (b'{"rows": []}', 422, "records"),
    (b"{}", 422, "records"),
    (b"[1, 2]", 422, "body"),
    (b'{"records": {"alcohol": 1}}', 422, "records"),
    (b'{"records": []}', 422, "records"),
    (b'{"records": [' + b",".join([b"{}"] * 5) + b"]}", 413, "records"),
    (b'{"records": ["' + b"x" * 5000 + b'"]}', 413, "body"),
])
def test_bad_requests_get_4xx_json_naming_the_field(wine, body, status, field):
    with client(wine["bundle"], max_records=4, max_body_bytes=4096) as c:
        response = c.post("/v1/wine/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["field"] == field and response.json()["error"].startswith(f"{field}: ")


def test_unknown_model_and_uploads_to_a_json_model(wine):
    with client(wine["bundle"]) as c:
        missing = c.post("/v1/churn/predict", json={"records": [{}]})
        upload = c.post("/v1/wine/predict", files={"files": ("a.csv", b"1,2")})
    assert missing.status_code == 404 and "churn" in missing.json()["error"]
    assert upload.status_code == 415 and upload.json()["field"] == "body"


def test_api_key_is_required_when_set(wine):
    with client(wine["bundle"], api_key="s3cret") as c:
        record = {"records": [{}]}
        assert c.post("/v1/wine/predict", json=record).status_code == 401
        assert c.post("/v1/wine/predict", json=record, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.post("/v1/wine/predict", json=record, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/wine/predict", json=record, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/churn/predict", json=record, headers={"X-API-Key": "s3cret"}).status_code == 404
        metrics = c.get("/metrics", headers={"X-API-Key": "s3cret"}).text
    for count in ['code="401",endpoint="predict",model="wine"} 2.0', 'code="200",endpoint="predict",model="wine"} 2.0',
                  'code="401",endpoint="metrics",model=""} 1.0', 'code="404",endpoint="predict",model=""} 1.0']:
        assert "aitk_requests_total{" + count in metrics  # every answer counted, refusals included


async def _concurrently(app, requests: list[dict], delay: float) -> list[httpx.Response]:
    """Send ``requests`` at once to ``app`` in process (lifespan started), each model call taking ``delay`` s."""
    model = app.state.models["wine"]
    predict = model.predictor.predict

    def slow_predict(inputs):
        time.sleep(delay)
        return predict(inputs)

    model.predictor.predict = slow_predict
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aitk") as c:
            return await asyncio.gather(*(c.post("/v1/wine/predict", json=r) for r in requests))


def _app(wine, **limits):
    from applied_aitk.runtime import Runtime
    from applied_aitk.serve import Limits, build_app

    return build_app([str(wine["bundle"])], Runtime(device="cpu"), Limits(**limits))


def test_full_queue_gets_503_with_retry_after(wine, rows):
    app = _app(wine, max_queue=3)
    one = {"records": rows["records"][:2]}
    responses = asyncio.run(_concurrently(app, [one, one, one], delay=0.3))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 503, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "retry later" in busy.json()["error"]


def test_timeout_gets_504(wine, rows):
    app = _app(wine, timeout_s=0.1)
    (response,) = asyncio.run(_concurrently(app, [{"records": rows["records"][:1]}], delay=0.5))
    assert response.status_code == 504 and "timed out" in response.json()["error"]


def test_concurrent_requests_share_model_calls(wine, rows):
    app = _app(wine, max_wait_ms=50)
    requests = [{"records": [record]} for record in rows["records"][:16]]
    responses = asyncio.run(_concurrently(app, requests, delay=0.05))
    assert all(r.status_code == 200 for r in responses)
    served = [r.json()["rows"][0] for r in responses]
    assert without_ids(served) == without_ids(rows["batch"][:16])
    text = app.state.metrics.text().decode()
    calls = next(line for line in text.splitlines() if line.startswith('aitk_batch_size_count{model="wine"}'))
    assert float(calls.split()[-1]) < 16  # fewer model calls than requests
    assert 'aitk_requests_total{code="200",endpoint="predict",model="wine"} 16.0' in text


SERVE_SLOWLY = textwrap.dedent("""
    import sys, time
    from applied_aitk.runtime import Runtime
    from applied_aitk.serve import Limits, build_app, run
    app = build_app([sys.argv[1]], Runtime(device="cpu"))
    model = app.state.models["wine"]
    predict = model.predictor.predict
    model.predictor.predict = lambda inputs: (time.sleep(1.5), predict(inputs))[1]
    run(app, "127.0.0.1", int(sys.argv[2]), Limits(timeout_s=10))
    assert "torch" not in sys.modules, "torch was imported"
""")


def test_sigterm_lets_requests_in_flight_finish_exits_0_and_torch_is_never_imported(wine, rows):
    """A real uvicorn server (every plugin loaded, one model slowed down): a request in the model
    when SIGTERM comes still gets its rows, the process exits 0, and it never imported torch."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE_SLOWLY, str(wine["bundle"]), str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "not ready"
            time.sleep(0.1)
        answers = []
        sender = threading.Thread(target=lambda: answers.append(httpx.post(url + "/v1/wine/predict", json={"records": rows["records"][:3]}, timeout=30)))
        sender.start()
        time.sleep(0.5)  # the request is in the model now
        process.send_signal(signal.SIGTERM)
        sender.join(30)
        assert process.wait(30) == 0, process.stderr.read()
        assert answers and answers[0].status_code == 200
        assert without_ids(answers[0].json()["rows"]) == without_ids(rows["batch"][:3])
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_cli_serves_and_takes_the_api_key_from_the_environment(wine, rows):
    with server(str(wine["bundle"]), "--max-wait-ms", "1", env={"AITK_API_KEY": "k3y"}) as (process, url):
        assert httpx.post(url + "/v1/wine/predict", json={"records": rows["records"][:2]}).status_code == 401
        answer = httpx.post(url + "/v1/wine/predict", json={"records": rows["records"][:2]}, headers={"Authorization": "Bearer k3y"})
        assert without_ids(answer.json()["rows"]) == without_ids(rows["batch"][:2])
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert f"serving /v1/wine/predict ({wine['bundle']}) on {url}" in process.stderr.read()  # the URL, not the folder alone


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_and_exit_1_before_the_models_load(wine, workers):
    """Was `serving ... on http://127.0.0.1:PORT`, uvicorn's `ERROR: [Errno 98] ...` and exit 3 (a
    batch run's code for failed records)."""
    import socket

    from conftest import run_aitk

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_aitk("serve", str(wine["bundle"]), "--port", str(port), "--workers", workers, plugins="wine")
    assert (result.returncode, result.stderr.strip()) == (1, f"error: cannot listen on 127.0.0.1:{port}: Address already in use")
    unknown = run_aitk("serve", str(wine["bundle"]), "--host", "no-such-host.invalid", plugins="wine")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: --host no-such-host.invalid: ") and len(unknown.stderr.splitlines()) == 1

@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_the_server_as_sigterm_does_with_or_without_workers(wine, workers):
    """SIGINT to the server (one process, or the supervisor of --workers 2): drained, exit 0."""
    with server(str(wine["bundle"]), "--workers", workers) as (process, url):
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "interrupted" not in process.stderr.read()


COUNT_TURNS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from applied_aitk.serve.sessions import SessionStore
    store = SessionStore(Path(sys.argv[1]), "bot", "conversation", 60, 10)
    for _ in range(200):
        store.change(sys.argv[2], lambda state: ({"turn": state["turn"] + 1}, None))
""")


def test_sessions_are_shared_by_processes_expire_and_are_capped(tmp_path):
    """The session store as two worker processes hold it (one SQLite file): a change made by one
    is seen by the other, none is lost when both change a session at once, idle sessions expire
    (404), and at most ``limit`` are open (503 with Retry-After)."""
    from applied_aitk.serve.http import HTTPError
    from applied_aitk.serve.sessions import SessionStore

    path = tmp_path / "sessions.db"
    one = SessionStore(path, "bot", "conversation", 60, 10)
    key = one.open({"turn": 0})
    other = subprocess.Popen([sys.executable, "-c", COUNT_TURNS, str(path), key])
    for _ in range(200):
        one.change(key, lambda state: ({"turn": state["turn"] + 1}, None))
    assert other.wait(60) == 0
    assert one.read(key) == {"turn": 400}

    idle = SessionStore(path, "idle", "conversation", 0.3, 2)
    first, second = idle.open({}), idle.open({})
    with pytest.raises(HTTPError) as full:
        idle.open({})
    assert full.value.status == 503 and full.value.headers["Retry-After"]
    idle.end(second)
    idle.open({})
    time.sleep(0.4)
    with pytest.raises(HTTPError) as gone:
        idle.touch(first)
    assert gone.value.status == 404 and "expired after 0.3 s idle" in gone.value.message and gone.value.field == "conversation"
    idle.open({}), idle.open({})  # the idle ones were dropped: room for two again
    assert one.read(key) == {"turn": 400}  # another model's sessions are its own

"""`aitk serve --engine ray`: the same app on Ray Serve answers as the in-process one, and drains on SIGTERM."""

from __future__ import annotations

import csv
import os
import signal

import httpx
from serve_client import client, server

from conftest import run_aitk


def test_ray_serve_answers_as_the_local_engine(wine, tmp_path):
    records = list(csv.DictReader(open(wine["data"] / "predict.csv", newline="")))[:20]
    records.append({**records[0], "alcohol": "lots"})
    bad_bodies = [b"{not json", b'{"records": []}']
    key = {"Authorization": "Bearer k3y"}
    with client(wine["bundle"], api_key="k3y") as local:
        expected = local.post("/v1/wine/predict", json={"records": records}, headers=key)
        expected_bad = [local.post("/v1/wine/predict", content=b, headers={**key, "content-type": "application/json"}) for b in bad_bodies]
    env = {"AITK_API_KEY": "k3y", "AITK_LOAD_PLUGINS": "wine"}
    with server(str(wine["bundle"]), "--engine", "ray", "--replicas", "1", env=env, ready_timeout=120) as (process, url):
        answer = httpx.post(url + "/v1/wine/predict", json={"records": records}, headers=key, timeout=30)
        bad = [httpx.post(url + "/v1/wine/predict", content=b, headers={**key, "content-type": "application/json"}) for b in bad_bodies]
        unauthorized = httpx.post(url + "/v1/wine/predict", json={"records": records[:1]})
        models = httpx.get(url + "/v1/models", headers=key).json()["models"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()
    assert answer.status_code == 200 and answer.json() == expected.json()
    assert answer.json()["rows"][-1]["error"] == "records[20]: field 'alcohol': 'lots' is not a number"
    assert [(r.status_code, r.json()) for r in bad] == [(r.status_code, r.json()) for r in expected_bad]
    assert unauthorized.status_code == 401 and unauthorized.json()["field"] == "authorization"
    assert [m["name"] for m in models] == ["wine"]
    errors = process.stderr.read()
    assert "Traceback" not in errors and "ERROR" not in errors, errors


def test_without_ray_serve_a_one_line_hint(wine, tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = run_aitk("serve", str(wine["bundle"]), "--engine", "ray", env={"PYTHONPATH": path}, plugins="wine")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --engine ray needs Ray Serve: pip install 'applied-aitk[ray]'"


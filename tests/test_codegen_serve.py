"""The codegen use case served and run on Ray: `aitk serve` returns the rows batch predict writes and
answers the official openai client; the Ray engine numbers repeated ids as the local engine does."""

import json

import httpx
import pytest

from conftest import codegen


@pytest.fixture
def trained(codegen_trained):
    return codegen_trained


@pytest.fixture
def loaded(codegen_loaded):
    return codegen_loaded


def test_serve_returns_the_rows_batch_predict_writes(trained, tmp_path):
    from serve_client import batch_rows, client, served_rows, slim_served_rows, without_ids

    records = [{"prompt": "def add(a, b):"}, {"prompt": "import os\n"}, {"prompt": ""}, {"task_id": "t1", "prompt": "class A:"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    batch = batch_rows("codegen", trained["bundle"], [tmp_path / "in.jsonl"], tmp_path / "out.jsonl")
    with client(trained["bundle"]) as c:
        served = served_rows(c, "codegen", records)
    assert len(served) == 4 and served[3]["id"] == "t1"
    assert without_ids(served)[:2] + without_ids(served)[3:] == without_ids(batch)[:2] + without_ids(batch)[3:]
    assert "field prompt" in served[2]["error"]
    assert slim_served_rows("codegen", trained["bundle"], records) == served


def test_openai_client_completes_through_serve_plain_and_streaming(trained, loaded):
    """The official openai client against `aitk serve`: greedy text equals the in-process
    generator's, the stream adds up to the plain text, a seed makes sampling repeatable, and
    a bad field is a 422 naming it."""
    import openai

    from applied_aitk.usecases.codegen.fim import Infill
    from applied_aitk.usecases.codegen.generate import Sampling
    from serve_client import server

    _, generator = loaded
    prompt = "def add(a, b):"
    want = generator.complete([prompt], Sampling(max_new_tokens=12, temperature=0))[0]
    with server(str(trained["bundle"])) as (_, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        plain = client.completions.create(model="codegen", prompt=prompt, max_tokens=12, temperature=0)
        chunks = list(client.completions.create(model="codegen", prompt=prompt, max_tokens=12, temperature=0, stream=True))
        sampled = [client.completions.create(model="codegen", prompt=prompt, max_tokens=12, temperature=0.9, top_p=0.9, seed=7).choices[0].text
                   for _ in range(2)]
        two = client.completions.create(model="codegen", prompt=[prompt, "import os\n"], max_tokens=6, temperature=0, stop=["\n\n"])
        infill = client.completions.create(model="codegen", prompt=prompt, suffix="\n    return c\n", max_tokens=12, temperature=0)
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            client.completions.create(model="codegen", prompt=prompt, max_tokens=100000)
        broken = httpx.post(url + "/v1/completions", content=b"not json", headers={"content-type": "application/json"})
        lone = httpx.post(url + "/v1/completions", content=b'{"prompt": "x\\ud800"}', headers={"content-type": "application/json"})
    assert plain.choices[0].text == want.text and plain.object == "text_completion"
    assert plain.usage.completion_tokens == len(want.tokens) and plain.usage.prompt_tokens == want.prompt_tokens
    assert plain.choices[0].finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[want.finish_reason]
    assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert sampled[0] == sampled[1]
    assert [c.index for c in two.choices] == [0, 1] and all("\n\n" not in c.text for c in two.choices)
    assert bad.value.response.json()["field"] == "max_tokens" and "max_tokens" in bad.value.message
    assert broken.status_code == 400 and broken.json()["field"] == "body"  # as every endpoint answers a body that is not JSON
    assert lone.status_code == 422 and lone.json()["error"]["message"] == "prompt: not valid Unicode (lone surrogate at character 1)"
    assert infill.choices[0].text == generator.complete([Infill(prompt, "\n    return c\n")], Sampling(max_new_tokens=12))[0].text


def test_ray_engine_numbers_repeated_ids_as_the_local_engine_resume_included(trained, tmp_path):
    """User-given ids repeated within and across files: the Ray engine writes x, y, x#2, x#3 as the
    local engine does, and --resume after x and y writes the rest."""
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "x", "prompt": "def add(a, b):"}, {"id": "y", "prompt": "import os\n"}, {"id": "x", "prompt": "class A:"}]))
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "x", "prompt": "for i in"}) + "\n")
    inputs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    local = codegen("predict", trained["bundle"], *inputs, "--out", tmp_path / "local.jsonl", "--max-new-tokens", "4")
    lines = (tmp_path / "local.jsonl").read_text().splitlines()
    (tmp_path / "ray.jsonl").write_text("\n".join(lines[:2]) + "\n")
    ray = codegen("predict", trained["bundle"], *inputs, "--out", tmp_path / "ray.jsonl", "--max-new-tokens", "4", "--engine", "ray", "--resume")
    assert local.returncode == ray.returncode == 0, ray.stderr
    assert [json.loads(line)["id"] for line in lines] == ["x", "y", "x#2", "x#3"]
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert "record id 'x' appears more than once" in ray.stderr


@pytest.mark.parametrize("field, value", [("max_tokens", True), ("max_tokens", "2"), ("temperature", True), ("seed", -1), ("stream", "yes")])
def test_completions_refuse_true_false_or_text_as_a_number_and_a_negative_seed(trained, field, value):
    from serve_client import client

    with client(trained["bundle"]) as c:  # was: true taken as 1, "2" as 2, seed -1 a 500 (numpy's ValueError)
        response = c.post("/v1/completions", json={"prompt": "def f():", "max_tokens": 2, field: value})
    assert response.status_code == 422 and response.json()["field"] == field


def test_a_prompt_or_stop_of_the_wrong_type_is_a_422_naming_the_field_not_the_union_member(trained):
    """`prompt` is text or a list of texts: a number was answered with the field `prompt.str`
    (pydantic's name of the first union member)."""
    from serve_client import client

    cases = [({"prompt": 5}, "prompt", "prompt: Input should be a valid string or a valid list"),
             ({"prompt": {"text": "x"}}, "prompt", "prompt: Input should be a valid string or a valid list"),
             ({"prompt": ["def f():", 7]}, "prompt[1]", "prompt[1]: Input should be a valid string"),
             ({"prompt": "def f():", "stop": [3]}, "stop[0]", "stop[0]: Input should be a valid string"),
             ({"prompt": "def f():", "max_tokens": "2", "stop": 4}, "max_tokens", "max_tokens: Input should be a valid integer")]
    with client(trained["bundle"]) as c:
        for body, field, message in cases:
            response = c.post("/v1/completions", json=body)
            assert response.status_code == 422 and response.json()["field"] == field, (body, response.json())
            assert response.json()["error"]["message"] == message, (body, response.json())

"""`POST /v1/completions` for `aitk serve`, compatible with OpenAI's completions API, so that editors
and tools that speak it (and the official ``openai`` client) work unchanged.

Fields: prompt (a string or a list of them, one choice each), suffix (fill in the middle between
each prompt and it, for a model with FIM tokens), max_tokens, temperature, top_p, stop, seed, stream (server-sent events, ending with ``data: [DONE]``). Requests with the same
sampling settings that arrive together are generated in one batch (left-padded, KV cache in ORT)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from applied_aitk.usecases.codegen.fim import Infill
from applied_aitk.usecases.codegen.generate import Completion, Sampling
from applied_aitk.errors import AitkError, unicode_problem
from applied_aitk.serve.http import HTTPError, guarded, invalid, json_body

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "error": "error"}


class CompletionRequest(BaseModel):
    """OpenAI's completion request; fields it has and aitk does not use (logprobs, user...) are ignored."""

    model: Optional[str] = Field(None, description="A served codegen model's name (see GET /v1/models).")
    prompt: Union[str, list[str]]
    suffix: Optional[str] = Field(None, description="Fill in the middle: the text after the completion (a model with FIM tokens).")
    # strict numbers: JSON true is no 1, "16" no 16 (pydantic's lax mode took both)
    max_tokens: int = Field(16, ge=1, strict=True, description="Tokens to generate at most.")
    temperature: float = Field(1.0, ge=0, le=2, strict=True, description="0: greedy.")
    top_p: float = Field(1.0, gt=0, le=1, strict=True)
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 sequences that end the completion (not included).")
    seed: Optional[int] = Field(None, ge=0, strict=True, description="Sampling seed (0 or more); the same seed and prompt give the same text.")
    stream: bool = Field(False, strict=True)
    n: int = Field(1, ge=1, le=1, strict=True, description="Completions per prompt: only 1.")


@dataclass
class Job:
    prompt: str | Infill
    sampling: Sampling
    on_text: Callable[[str], None] | None = None


def add_routes(app: FastAPI, model: Any) -> None:
    """Register ``model`` for /v1/completions (the route itself is added once per app)."""
    generator = model.predictor.generator

    def run(jobs: list[Job]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(jobs)
        groups: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(repr(job.sampling), []).append(i)
        for members in groups.values():
            def on_text(k: int, text: str, members=members) -> None:
                if jobs[members[k]].on_text:
                    jobs[members[k]].on_text(text)

            done = generator.complete([jobs[i].prompt for i in members], jobs[members[0]].sampling, on_text=on_text)
            for i, completion in zip(members, done):
                results[i] = completion
        return results

    served = getattr(app.state, "completions", None)
    if served is None:
        served = app.state.completions = {}
        _add_route(app, served)
    served[model.name] = (model, model.new_batcher("completions", run), generator.context)


def _add_route(app: FastAPI, served: dict[str, tuple]) -> None:
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": CompletionRequest.model_json_schema()}}}}

    @app.post("/v1/completions", tags=["codegen"], openapi_extra=body)
    async def completions(request: Request):
        """OpenAI-compatible text completion (plain, or streamed as server-sent events). Errors come
        in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, plus ``field``."""
        try:
            return await _complete(await _parse(request), served)
        except HTTPError as e:
            kind = "invalid_request_error" if e.status < 500 else "server_error"
            return JSONResponse({"error": {"message": e.message, "type": kind, "param": e.field, "code": e.status}, "field": e.field},
                                status_code=e.status, headers=e.headers)


async def _parse(request: Request) -> CompletionRequest:
    """The request, parsed as FastAPI parses every other endpoint's body (the standard library's
    JSON, then the model): the same 400 for a body that is not JSON, the same 422s."""
    try:
        parsed = CompletionRequest.model_validate(json_body(await request.body()))
    except ValidationError as e:
        raise invalid(e.errors()) from None
    prompts = [parsed.prompt] if isinstance(parsed.prompt, str) else parsed.prompt
    for field, text in [*(("prompt", p) for p in prompts), ("suffix", parsed.suffix or "")]:
        problem = unicode_problem(text)
        if problem:
            raise HTTPError(422, f"{field}: {problem}", field)
    return parsed


async def _complete(request: CompletionRequest, served: dict[str, tuple]):
    name = _model_name(request.model, served)
    model, batcher, context = served[name]
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if not prompts or len(prompts) > model.limits.max_records or not all(p.strip() for p in prompts):
        raise HTTPError(422, f"prompt: expected 1 to {model.limits.max_records} non-empty prompts", "prompt")
    sampling = _sampling(request, context)
    if request.suffix is not None:
        if model.predictor.generator.fim is None:
            raise HTTPError(422, f"suffix: model {name!r} has no fill-in-the-middle tokens", "suffix")
        prompts = [Infill(p, request.suffix) for p in prompts]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": name}
    if request.stream:
        return StreamingResponse(_stream(model, batcher, prompts, sampling, head), media_type="text/event-stream")
    done = await guarded(model.metrics, model.limits, name, "completions", batcher.call([Job(p, sampling) for p in prompts]))
    errors = [c.error for c in done if c.error]
    if errors:
        raise HTTPError(422, f"prompt: {errors[0]}", "prompt")
    prompt_tokens = sum(c.prompt_tokens for c in done)
    completion_tokens = sum(len(c.tokens) for c in done)
    return {**head, "choices": [_choice(i, c.text, FINISH[c.finish_reason]) for i, c in enumerate(done)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}}


def _model_name(requested: str | None, served: dict[str, tuple]) -> str:
    if requested in served:
        return requested
    if requested is None and len(served) == 1:
        return next(iter(served))
    raise HTTPError(404, f"model {requested!r}: no such codegen model here (served: {', '.join(served)})", "model")


def _sampling(request: CompletionRequest, context: int) -> Sampling:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > 4 or not all(stop):
        raise HTTPError(422, "stop: expected up to 4 non-empty strings", "stop")
    sampling = Sampling(max_new_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                        stop=tuple(stop), seed=request.seed or 0)
    try:
        sampling.check(context)
    except AitkError as e:
        field = str(e).split(" ", 1)[0].replace("max_new_tokens", "max_tokens")
        raise HTTPError(422, str(e).replace("max_new_tokens", "max_tokens"), field) from None
    return sampling


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


async def _stream(model: Any, batcher: Any, prompts: list[str | Infill], sampling: Sampling, head: dict[str, Any]) -> AsyncIterator[str]:
    """Server-sent events: a chunk per piece of text as it is generated, then one with each
    choice's finish_reason, then ``[DONE]``; a failure is one ``{"error": ...}`` event."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()

    def emitter(index: int) -> Callable[[str], None]:
        return lambda text: loop.call_soon_threadsafe(pieces.put_nowait, (index, text))

    jobs = [Job(p, sampling, emitter(i)) for i, p in enumerate(prompts)]
    task = asyncio.ensure_future(guarded(model.metrics, model.limits, model.name, "completions", batcher.call(jobs)))
    task.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    try:
        while (item := await pieces.get()) is not None:
            index, text = item
            yield _event({**head, "choices": [_choice(index, text, None)]})
        try:
            done = task.result()
        except HTTPError as e:
            yield _event({"error": {"message": e.message, "type": "server_error" if e.status >= 500 else "invalid_request_error", "code": e.status}})
            return
        for i, completion in enumerate(done):
            if completion.error:
                yield _event({"error": {"message": f"prompt: {completion.error}", "type": "invalid_request_error", "code": 422}})
                return
            yield _event({**head, "choices": [_choice(i, "", FINISH[completion.finish_reason])]})
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():  # the client went away: its jobs are dropped from the queue
            task.cancel()


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

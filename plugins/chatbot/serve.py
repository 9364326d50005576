"""Conversations with their state on the server, for `aitk serve`, and a web chat page on them.

    POST   /v1/{model}/conversations                 -> {"id", "model", "expires_after_s"}
    POST   /v1/{model}/conversations/{id}/messages   {"text": "..."} -> the turn, as `chatbot chat --json` prints it
    GET    /v1/{model}/conversations/{id}            -> turns so far, slots, pending intent, hand-off
    DELETE /v1/{model}/conversations/{id}
    GET    /chat[?model=NAME]                        a chat page (plain HTML and JavaScript) on this API

Each conversation is the plugin's own dialogue manager (``Conversation``), so slots, a pending
clarification and a hand-off carry across turns exactly as in `aitk chatbot chat`. Messages of
different conversations that arrive together are understood in one model call; the messages
of one conversation are answered in order. A conversation idle for ``--session-ttl`` seconds
is dropped (404 afterwards)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from applied_aitk.usecases.chatbot.dialogue import Conversation
from applied_aitk.serve.http import HTTPError, guarded

PAGE = Path(__file__).parent / "static" / "chat.html"
MAX_CONVERSATIONS = 100_000
MAX_MESSAGE_CHARS = 4000


class Message(BaseModel):
    text: str = Field(..., max_length=MAX_MESSAGE_CHARS, description="What the customer wrote.")


@dataclass
class Session:
    conversation: Conversation
    used: float  # time.monotonic() of its last message
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Conversations:
    """The open conversations of one model, at most ``limit``, each dropped after ``ttl`` seconds
    without a message. Kept in the order of their last message, so that expiring the idle ones
    looks at those alone (the oldest first), not at every conversation on every request."""

    def __init__(self, policy: Any, ttl: float, limit: int = MAX_CONVERSATIONS):
        self.policy, self.ttl, self.limit = policy, ttl, limit
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self) -> str:
        self.expire()
        if len(self.sessions) >= self.limit:
            raise HTTPError(503, f"{len(self.sessions)} conversations open; retry later", None, {"Retry-After": "60"})
        key = uuid.uuid4().hex
        self.sessions[key] = Session(Conversation(self.policy), time.monotonic())
        return key

    def get(self, key: str) -> Session:
        self.expire()
        session = self.sessions.get(key)
        if session is None:
            raise HTTPError(404, f"conversation {key!r}: no such conversation (ended, or expired after {self.ttl:g} s idle)", "conversation")
        session.used = time.monotonic()
        self.sessions.move_to_end(key)
        return session

    def end(self, key: str) -> None:
        self.get(key)
        del self.sessions[key]

    def expire(self) -> None:
        """Drop the conversations idle for ``ttl`` seconds; one still answering a message stays."""
        cutoff = time.monotonic() - self.ttl
        while self.sessions:
            key, session = next(iter(self.sessions.items()))
            if session.used >= cutoff or session.lock.locked():
                return
            del self.sessions[key]


def add_routes(app: FastAPI, model: Any) -> None:
    nlu = model.predictor.nlu
    understand = model.new_batcher("understand", nlu.understand)
    conversations = Conversations(nlu.policy, model.limits.session_ttl_s)
    name, base = model.name, f"/v1/{model.name}/conversations"

    @app.post(base, tags=[name], status_code=201)
    async def open_conversation() -> dict[str, Any]:
        """Start a conversation; send its messages to ``{id}/messages``."""
        return {"id": conversations.open(), "model": name, "expires_after_s": conversations.ttl}

    @app.post(base + "/{conversation}/messages", tags=[name])
    async def send_message(conversation: str, message: Message) -> dict[str, Any]:
        """The bot's turn: reply, action (respond, ask_slot, clarify, faq, fallback, handoff...),
        intent, confidence, slots, and what it is asking for."""
        session = conversations.get(conversation)
        async with session.lock:
            (understood,) = await guarded(model.metrics, model.limits, name, "messages", understand.call([message.text]))
            turn = session.conversation.respond(message.text, understood)
        model.metrics.rows(name, [turn])
        return {"conversation": conversation, "turn": session.conversation.turn, **turn, "handed_off": session.conversation.handed_off}

    @app.get(base + "/{conversation}", tags=[name])
    async def conversation_state(conversation: str) -> dict[str, Any]:
        """Where the conversation stands: turns so far, the intent waiting for slots, slots, hand-off."""
        state = conversations.get(conversation).conversation
        return {"conversation": conversation, "turns": state.turn, "pending": state.pending, "slots": state.slots, "slot_text": state.slot_text,
                "clarifying": list(state.clarifying) if state.clarifying else None, "handed_off": state.handed_off}

    @app.delete(base + "/{conversation}", tags=[name], status_code=204)
    async def end_conversation(conversation: str) -> Response:
        conversations.end(conversation)
        return Response(status_code=204)

    _add_page(app, name, nlu.domain.get("name", name))


def _add_page(app: FastAPI, model: str, title: str) -> None:
    """``GET /chat`` once per app; ``?model=NAME`` picks among several chatbot models."""
    pages = getattr(app.state, "chat_pages", None)
    if pages is None:
        pages = app.state.chat_pages = {}

        @app.get("/chat", response_class=HTMLResponse, include_in_schema=False)
        async def chat_page(model: str | None = None) -> HTMLResponse:
            chosen = model or next(iter(pages))
            if chosen not in pages:
                raise HTTPError(404, f"model {chosen!r}: no chatbot here (served: {', '.join(pages)})", "model")
            html = PAGE.read_text(encoding="utf-8")
            return HTMLResponse(html.replace("{{MODEL}}", _attribute(chosen)).replace("{{TITLE}}", _attribute(pages[chosen])))

    pages[model] = title


def _attribute(text: str) -> str:
    import html

    return html.escape(text, quote=True)

"""Conversations with their state on the server, for `aitk serve`, and a web chat page on them.

    POST   /v1/{model}/conversations                 -> {"id", "model", "expires_after_s"}
    POST   /v1/{model}/conversations/{id}/messages   {"text": "..."} -> the turn, as `chatbot chat --json` prints it
    GET    /v1/{model}/conversations/{id}            -> turns so far, slots, pending intent, hand-off
    DELETE /v1/{model}/conversations/{id}
    GET    /chat[?model=NAME]                        a chat page (plain HTML and JavaScript) on this API

Each conversation is the plugin's own dialogue manager (``Conversation``), so slots, a pending
clarification and a hand-off carry across turns exactly as in `aitk chatbot chat`. Its state lives
in the server's session store (toolkit/serve/sessions.py: shared by the worker processes of
``--workers N``, so any of them can answer the next message). Messages of different
conversations that arrive together are understood in one model call; two messages of one
conversation sent at once are applied one after the other, each turn seeing the previous one's
state. A conversation idle for ``--session-ttl`` seconds is dropped (404 afterwards)."""

from __future__ import annotations

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


def add_routes(app: FastAPI, model: Any) -> None:
    nlu = model.predictor.nlu
    understand = model.new_batcher("understand", nlu.understand)
    conversations = model.sessions("conversation", MAX_CONVERSATIONS)
    name, base = model.name, f"/v1/{model.name}/conversations"

    @app.post(base, tags=[name], status_code=201)
    async def open_conversation() -> dict[str, Any]:
        """Start a conversation; send its messages to ``{id}/messages``."""
        return {"id": conversations.open(Conversation(nlu.policy).state()), "model": name, "expires_after_s": conversations.ttl}

    @app.post(base + "/{conversation}/messages", tags=[name])
    async def send_message(conversation: str, message: Message) -> dict[str, Any]:
        """The bot's turn: reply, action (respond, ask_slot, clarify, faq, fallback, handoff...),
        intent, confidence, slots, and what it is asking for."""
        conversations.touch(conversation)  # 404 now if it is gone; in use while the message is understood
        (understood,) = await guarded(model.metrics, model.limits, name, "messages", understand.call([message.text]))

        def respond(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            dialogue = Conversation.restore(nlu.policy, state)
            turn = dialogue.respond(message.text, understood)
            return dialogue.state(), {"conversation": conversation, "turn": dialogue.turn, **turn, "handed_off": dialogue.handed_off}

        answer = conversations.change(conversation, respond)
        model.metrics.rows(name, [answer])
        return answer

    @app.get(base + "/{conversation}", tags=[name])
    async def conversation_state(conversation: str) -> dict[str, Any]:
        """Where the conversation stands: turns so far, the intent waiting for slots, slots, hand-off."""
        state = conversations.read(conversation)
        return {"conversation": conversation, "turns": state["turn"], "pending": state["pending"], "slots": state["slots"],
                "slot_text": state["slot_text"], "clarifying": state["clarifying"], "handed_off": state["handed_off"]}

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

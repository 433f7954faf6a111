"""The guestbook: JSON API, the page with its no-JavaScript form, and live updates over WebSocket."""
from __future__ import annotations

import hmac
from typing import Any

import tornado.web
import tornado.websocket
from tornado.web import url

from server.services import Invalid, NotFound, RateLimited, Unavailable

from .base import PublicError, ApiHandler, PageHandler
from .schemas import MessageIn, MessageListOut, MessageOut


def _int_argument(handler: tornado.web.RequestHandler, name: str) -> Any:
    """A query argument as int when it is one, the raw text otherwise (the service rejects it)."""
    raw = handler.get_query_argument(name, None)
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isdigit() and len(raw) < 19 else raw


class MessagesHandler(ApiHandler):
    """GET /api/messages?limit=&before= (newest first) and POST /api/messages."""

    async def get(self) -> None:
        limit, before = _int_argument(self, "limit"), _int_argument(self, "before")
        try:
            page = await self.services.guestbook.list_messages(limit, before)
        except Invalid as exc:
            raise PublicError(422, exc.message, field=exc.field) from None
        except Unavailable as exc:
            raise unavailable(exc) from None
        self.set_header("Cache-Control", "no-cache")
        self.write_model(MessageListOut(messages=page.messages, next_before=page.next_before,
                                        count=page.count))

    async def post(self) -> None:
        body = self.parse_model(MessageIn)
        try:
            message = await self.services.guestbook.post_message(body.name, body.text,
                                                                 self.request.remote_ip or "")
        except Invalid as exc:
            raise PublicError(422, exc.message, field=exc.field) from None
        except RateLimited as exc:
            raise PublicError(429, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
        except Unavailable as exc:
            raise unavailable(exc) from None
        self.set_header("Location", self.reverse_url("api-message", message.id))
        self.write_model(MessageOut(**message.to_json()), 201)


class MessageHandler(ApiHandler):
    """GET /api/messages/<id> and DELETE /api/messages/<id> (admin token only)."""

    async def get(self, message_id: str) -> None:
        try:
            message = await self.services.guestbook.get_message(_message_id(message_id))
        except NotFound as exc:
            raise PublicError(404, exc.message) from None
        except Unavailable as exc:
            raise unavailable(exc) from None
        self.write_model(MessageOut(**message.to_json()))

    async def delete(self, message_id: str) -> None:
        self._require_admin()
        try:
            await self.services.guestbook.delete_message(_message_id(message_id))
        except NotFound as exc:
            raise PublicError(404, exc.message) from None
        except Unavailable as exc:
            raise unavailable(exc) from None
        self.set_status(204)
        self.finish()

    def _require_admin(self) -> None:
        token = self.config.admin_token
        if token is None:
            raise PublicError(403, "deleting messages is disabled: the server has no --admin-token")
        given = self.request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            raise PublicError(401, "send 'Authorization: Bearer <admin token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="guestbook"'})
        if not hmac.compare_digest(given[len("Bearer "):].encode(), token.encode()):
            raise PublicError(403, "wrong admin token")


def _message_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise PublicError(404, f"no message {text}")
    return int(text)


def unavailable(exc: Unavailable) -> PublicError:
    """A 503 for a service outage, with Retry-After."""
    return PublicError(503, exc.message, headers={"Retry-After": str(exc.retry_after)})


class GuestbookPageHandler(PageHandler):
    """GET /guestbook (latest messages and the form) and POST /guestbook (the form, XSRF-checked)."""

    async def get(self) -> None:
        await self._render(status=200)

    async def post(self) -> None:
        name = self.get_body_argument("name", "")
        text = self.get_body_argument("text", "")
        try:
            await self.services.guestbook.post_message(name, text, self.request.remote_ip or "")
        except Invalid as exc:
            await self._render(422, errors={exc.field: exc.reason}, name=name, text=text)
            return
        except RateLimited as exc:
            self.set_header("Retry-After", str(exc.retry_after))
            await self._render(429, errors={"form": exc.message}, name=name, text=text)
            return
        # post/redirect/get: a reload does not post twice
        self.redirect(self.reverse_url("guestbook") + "#messages", status=303)

    async def _render(self, status: int, errors: dict[str, str] | None = None, name: str = "",
                      text: str = "") -> None:
        before = _int_argument(self, "before")
        try:
            page = await self.services.guestbook.list_messages(None, before)
        except Invalid:
            raise tornado.web.HTTPError(404, "There is no such page of messages") from None
        except Unavailable:
            raise PublicError(503, "The guestbook cannot be read right now: its database is "
                                   "unavailable. Please try again shortly.",
                              headers={"Retry-After": "2"}) from None
        self.set_status(status)
        self.render("guestbook.html", page=page, errors=errors or {}, name=name, text=text,
                    before=before, limits=self.services.guestbook)


class LiveHandler(tornado.websocket.WebSocketHandler):
    """GET /guestbook/live: a WebSocket that pushes every new or deleted message as JSON."""

    _unsubscribe = None

    def open(self) -> None:  # type: ignore[override]
        state = self.application.settings["state"]
        config = self.application.settings["config"]
        if state.draining or len(state.live_clients) >= config.live_max_clients:
            self.close(1013, "try again later")
            return
        state.live_clients.add(self)
        self._unsubscribe = self.application.settings["services"].events.subscribe(self._send)

    def _send(self, payload: str) -> None:
        try:
            self.write_message(payload)
        except tornado.websocket.WebSocketClosedError:
            self.on_close()

    def on_message(self, message: str | bytes) -> None:
        pass  # the live channel is one-way; clients only listen

    def on_close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.application.settings["state"].live_clients.discard(self)


default_handlers = [
    url(r"/api/messages", MessagesHandler, name="api-messages"),
    url(r"/api/messages/([^/]+)", MessageHandler, name="api-message"),
    url(r"/guestbook", GuestbookPageHandler, name="guestbook"),
    url(r"/guestbook/live", LiveHandler, name="guestbook-live"),
]

"""The guestbook: JSON API, the page with its no-JavaScript form, and live updates over WebSocket."""
from __future__ import annotations

import hmac

import tornado.websocket
from tornado.web import url

from server.rules import MAX_WHOLE_NUMBER, whole_number
from server.services import Invalid, RateLimited, Unavailable

from .base import ApiHandler, PageHandler, PublicError, WebSocketHandler, public_error
from .openapi import Param, Response, documented, from_settings
from .schemas import MessageIn, MessageListOut, MessageOut


class MessagesHandler(ApiHandler):
    """GET /api/messages?limit=&before= (newest first) and POST /api/messages."""

    @documented("A page of guestbook messages, newest first",
                query={"limit": Param({"type": "integer", "minimum": 1,
                                       **from_settings(maximum="max_page_size")},
                                      "messages per page, at most --max-page-size (default "
                                      "--page-size)", False, 20),
                       "before": Param({"type": "integer", "minimum": 1,
                                        "maximum": MAX_WHOLE_NUMBER},
                                       "only messages older than this id: next_before of the "
                                       "previous page")},
                responses={200: MessageListOut,
                           422: "limit or before is not a whole number in range, or is given more "
                                "than once",
                           503: Response("the database is unavailable", headers=("Retry-After",))})
    async def get(self) -> None:
        limit, before = self.query_number("limit"), self.query_number("before")
        page = await self.services.guestbook.list_messages(limit, before)
        self.set_header("Cache-Control", "no-cache")
        if page.encoded is not None:
            # the cached page is already the response body, in MessageListOut's shape
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(page.encoded)
            return
        # validated from the service's plain dicts (the constructor would do the same)
        self.write_model(MessageListOut.model_validate(
            {"messages": page.messages, "next_before": page.next_before, "count": page.count}))

    @documented("Sign the guestbook",
                description="A 201 means the message is on disk. Posting is rate-limited per "
                            "client (--post-rate).",
                request=MessageIn, request_example={"name": "Ada", "text": "Hello!"},
                responses={201: Response("the message was stored", body=MessageOut,
                                         headers=("Location",)),
                           422: "name or text is empty, too long or holds control characters",
                           429: Response("this client posted more often than --post-rate allows",
                                         headers=("Retry-After",)),
                           503: Response("the database is unavailable", headers=("Retry-After",))})
    async def post(self) -> None:
        body = self.parse_model(MessageIn)
        message = await self.services.guestbook.post_message(body.name, body.text,
                                                             self.request.remote_ip or "")
        self.set_header("Location", self.reverse_url("api-message", message.id))
        self.write_model(MessageOut(**message.to_json()), 201)


MESSAGE_ID = {"message_id": Param({"type": "integer", "minimum": 1, "maximum": MAX_WHOLE_NUMBER},
                                  "the message's id", example=1)}


class MessageHandler(ApiHandler):
    """GET /api/messages/<id> and DELETE /api/messages/<id> (admin token only)."""

    @documented("One guestbook message",
                path=MESSAGE_ID,
                responses={200: MessageOut,
                           404: "no message with this id",
                           503: Response("the database is unavailable", headers=("Retry-After",))})
    async def get(self, message_id: str) -> None:
        message = await self.services.guestbook.get_message(_message_id(message_id))
        self.write_model(MessageOut(**message.to_json()))

    @documented("Delete a guestbook message (admin token)", security="adminToken",
                path=MESSAGE_ID,
                responses={204: "the message was deleted",
                           401: Response("no 'Authorization: Bearer …' header",
                                         headers=("WWW-Authenticate",)),
                           403: "wrong admin token, or the server has no --admin-token "
                                "(deleting is disabled)",
                           404: "no message with this id",
                           503: Response("the database is unavailable", headers=("Retry-After",))})
    async def delete(self, message_id: str) -> None:
        self._require_admin()
        await self.services.guestbook.delete_message(_message_id(message_id))
        self.set_status(204)
        self.finish()

    def _require_admin(self) -> None:
        token = self.config.admin_token
        if not token:  # an empty token must not mean "an empty Bearer value is the password"
            raise PublicError(403, "deleting messages is disabled: the server has no --admin-token")
        given = self.request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            raise PublicError(401, "send 'Authorization: Bearer <admin token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="guestbook"'})
        if not hmac.compare_digest(given[len("Bearer "):].encode(), token.encode()):
            raise PublicError(403, "wrong admin token")


def _message_id(text: str) -> int:
    """The id in a message's path; anything but ASCII digits names no message (404)."""
    message_id = whole_number(text)
    if message_id is None:
        raise PublicError(404, f"no message {text}")
    return message_id


class GuestbookPageHandler(PageHandler):
    """GET /guestbook (latest messages and the form) and POST /guestbook (the form, XSRF-checked)."""

    async def get(self) -> None:
        await self._render()

    async def post(self) -> None:
        name = self.get_body_argument("name", "")
        # a form sends a textarea's line ends as CRLF (HTML's form submission) while its
        # maxlength counts them as one character: count them as the browser did
        text = self.get_body_argument("text", "").replace("\r\n", "\n")
        try:
            await self.services.guestbook.post_message(name, text, self.request.remote_ip or "")
        except (Invalid, RateLimited) as exc:
            # the form again, the problem beside its field (or above the form)
            self.set_error_status(exc)
            errors = {exc.field: exc.reason} if isinstance(exc, Invalid) else {"form": exc.message}
            await self._render(errors=errors, name=name, text=text)
            return
        # post/redirect/get: a reload does not post twice
        self.redirect(self.reverse_url("guestbook") + "#messages", status=303)

    async def _render(self, errors: dict[str, str] | None = None, name: str = "",
                      text: str = "") -> None:
        """The page in the status already set; the error page when the messages cannot be read."""
        before = self.query_number("before")
        try:
            page = await self.services.guestbook.list_messages(None, before)
        except Invalid as exc:  # the page's own words; the status comes from the table
            raise public_error(exc, f"There is no such page of messages ({exc.message}).") from None
        except Unavailable as exc:
            raise public_error(exc, "The guestbook cannot be read right now: its database is "
                                    "unavailable. Please try again shortly.") from None
        self.render("guestbook.html", page=page, errors=errors or {}, name=name, text=text,
                    before=before, limits=self.services.guestbook)


class LiveHandler(WebSocketHandler):
    """GET /guestbook/live: a WebSocket that pushes every new or deleted message as JSON."""

    _unsubscribe = None

    def open(self) -> None:
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

"""A WebSocket chat room, as Tornado's demos/websocket/chatdemo.py writes one.

Run it with ``python -m server --app tests.apps.chat:make_app`` (or ``app.listen()``).
"""
import os
import uuid

import tornado.escape
import tornado.web
import tornado.websocket

HERE = os.path.dirname(__file__)


class Room:
    """Who is listening, and the last messages (for people who join later)."""

    def __init__(self, cache_size=200):
        self.waiters = set()
        self.cache = []
        self.cache_size = cache_size

    def publish(self, chat):
        self.cache = (self.cache + [chat])[-self.cache_size:]
        for waiter in list(self.waiters):
            try:
                waiter.write_message(chat)
            except tornado.websocket.WebSocketClosedError:
                self.waiters.discard(waiter)


class MainHandler(tornado.web.RequestHandler):
    def initialize(self, room):
        self.room = room

    def get(self):
        self.render("chat.html", messages=self.room.cache)


class ChatSocketHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, room):
        self.room = room

    def open(self):
        self.room.waiters.add(self)

    def on_close(self):
        self.room.waiters.discard(self)

    def on_message(self, message):
        parsed = tornado.escape.json_decode(message)
        chat = {"id": str(uuid.uuid4()), "body": parsed["body"], "pid": os.getpid()}
        chat["html"] = tornado.escape.to_unicode(self.render_string("message.html", message=chat))
        self.room.publish(chat)


def make_app():
    room = Room()
    return tornado.web.Application(
        [(r"/", MainHandler, {"room": room}), (r"/chatsocket", ChatSocketHandler, {"room": room})],
        template_path=os.path.join(HERE, "templates"),
        static_path=os.path.join(HERE, "static"),
        cookie_secret="a chat room for the tests",
        xsrf_cookies=True,
    )

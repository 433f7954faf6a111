"""Tornado's "Hello, world" demo, as its README writes it; served by app.listen() when run."""
import asyncio

import tornado.web


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world")


def make_app():
    return tornado.web.Application([(r"/", MainHandler)])


async def main(port=8888):
    app = make_app()
    app.listen(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import sys
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8888))

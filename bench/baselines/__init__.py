"""Hello-world servers the suite measures the project against (``python -m bench.baselines.NAME``).

Each binds 127.0.0.1 (``--port 0`` picks a free port) and prints the project's ready line,
``Serving on http://127.0.0.1:PORT/ (pid N)``, so the suite starts them all the same way.
"""

HELLO = b"Hello, world"


def announce(port: int) -> None:
    """The project's ready line, which the suite waits for."""
    import os

    print(f"Serving on http://127.0.0.1:{port}/ (pid {os.getpid()})", flush=True)

"""Keep-alive HTTP/1.1 load generator: hold, closed-loop and fixed-rate modes (python -m bench)."""

__version__ = "0.1.0"
TOOL_NAME = "tornado-hps-bench"

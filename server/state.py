"""Runtime state of one server process, shared by the launcher and handlers (no globals)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerState:
    """What the process is doing now: started when, draining or not, API requests in flight."""

    started_at: float = field(default_factory=time.time)
    draining: bool = False
    api_in_flight: int = 0
    live_clients: set[Any] = field(default_factory=set)  # open WebSocket handlers

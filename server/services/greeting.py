"""Greetings: the one rule (a name of bounded length) shared by pages, API and TCP service."""
from __future__ import annotations

from .errors import Invalid

NAME_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"
"""A name the greeting accepts, as a JSON Schema (ECMA-262) pattern: no control character."""

ANONYMOUS = "Anonymous"


class GreetingService:
    """Turns a name into a greeting, refusing names that are too long or hold control characters."""

    def __init__(self, max_name_length: int) -> None:
        self.max_name_length = max_name_length

    def clean_name(self, name: str | None) -> str:
        """Return the name to greet: stripped, 'Anonymous' when blank, or raise Invalid.

        The rules apply to the name as sent (the OpenAPI document states them exactly: at most
        --max-name-length characters, no control character); surrounding spaces are then trimmed.
        """
        name = name or ""
        if len(name) > self.max_name_length:
            raise Invalid("name", f"must be at most {self.max_name_length} characters")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise Invalid("name", "must not contain control characters")
        return name.strip() or ANONYMOUS

    def greet(self, name: str | None) -> str:
        """Return 'Hello, <name>' for a valid name."""
        return f"Hello, {self.clean_name(name)}"

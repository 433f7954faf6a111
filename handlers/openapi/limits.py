"""Schema keywords whose values are settings: ``from_settings`` markers, resolved when a document is built."""
from __future__ import annotations

from typing import Any

SETTING_KEY = "x-setting"


def from_settings(**keywords: str) -> dict[str, Any]:
    """JSON Schema keywords whose values are settings, resolved when the document is built.

    ``from_settings(maximum="slow_max_ms")`` in a parameter's schema (or a model field's
    ``json_schema_extra``) becomes ``"maximum": <--slow-max-ms in force>``: the document states
    the bounds the handlers enforce with the settings the server runs with.
    """
    return {SETTING_KEY: keywords}


def resolve_settings(node: Any, config: Any, problems: list[str]) -> None:
    """Replace every :func:`from_settings` marker in a built document by the settings' values, in place."""
    if isinstance(node, dict):
        keywords = node.pop(SETTING_KEY, None)
        for keyword, name in (keywords or {}).items():
            if config is None or not hasattr(config, name):
                problems.append(f"schema keyword {keyword} names the unknown setting {name!r}")
            else:
                node[keyword] = getattr(config, name)
        for item in node.values():
            resolve_settings(item, config, problems)
    elif isinstance(node, list):
        for item in node:
            resolve_settings(item, config, problems)


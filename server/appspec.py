"""``--app MODULE:ATTR``: find a Tornado application of the user's, check it, build it.

Like ``uvicorn main:app``. ATTR may be

- a ``tornado.web.Application`` (or any ``HTTPServerConnectionDelegate``);
- a callable returning one, sync or async, called once per worker process (after the fork);
- a callable returning an async context manager that yields one (``contextlib.asynccontextmanager``):
  what follows its ``yield`` runs at shutdown, after the last request, so the application can own
  resources (a database pool) for exactly its lifetime.

Every way it can be wrong is a ConfigError of one line naming what was wrong (exit code 2).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado import httputil

from .config import ConfigError

ACCEPTED = ("a tornado.web.Application, an HTTPServerConnectionDelegate, or a callable "
            "returning one (sync, async, or an async context manager yielding one)")


@dataclass(frozen=True)
class AppSpec:
    """A resolved --app: the object ATTR names, and what it is."""

    text: str
    target: Any

    @property
    def is_factory(self) -> bool:
        """True when ATTR must be called to get the application."""
        return not isinstance(self.target, httputil.HTTPServerConnectionDelegate)


def resolve(text: str, app_dir: Path) -> AppSpec:
    """Import MODULE (with app_dir first on sys.path) and look up ATTR; ConfigError when wrong."""
    module_name, colon, attribute = text.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"--app {text}: use MODULE:ATTR (for example myapp:make_app)")
    directory = str(app_dir)
    if directory not in sys.path[:1]:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"--app {text}: no module named {module_name!r} "
                              f"(looked in {directory} and on sys.path)") from None
        raise ConfigError(f"--app {text}: importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the module itself is broken: say how, in one line
        raise ConfigError(f"--app {text}: importing {module_name} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"--app {text}: {module_name} has no attribute "
                              f"{attribute!r}") from None
    if not (isinstance(target, httputil.HTTPServerConnectionDelegate) or callable(target)):
        raise ConfigError(f"--app {text}: {attribute} is {_kind(target)}, not {ACCEPTED}")
    return AppSpec(text, target)


@contextlib.asynccontextmanager
async def built(spec: AppSpec) -> AsyncIterator[httputil.HTTPServerConnectionDelegate]:
    """The application of a resolved --app, for as long as the server runs (factory called once)."""
    if not spec.is_factory:
        yield spec.target
        return
    try:
        made = spec.target()
        if inspect.isawaitable(made):
            made = await made
    except Exception as exc:
        raise ConfigError(f"--app {spec.text}: calling it raised {type(exc).__name__}: "
                          f"{exc}") from None
    if hasattr(made, "__aenter__") and hasattr(made, "__aexit__"):
        try:
            app = await made.__aenter__()
        except Exception as exc:
            raise ConfigError(f"--app {spec.text}: starting it raised {type(exc).__name__}: "
                              f"{exc}") from None
        try:
            _check(spec, app)
            yield app
        except BaseException:
            if not await made.__aexit__(*sys.exc_info()):
                raise
        else:
            await made.__aexit__(None, None, None)
        return
    _check(spec, made)
    yield made


def _check(spec: AppSpec, app: Any) -> None:
    if not isinstance(app, httputil.HTTPServerConnectionDelegate):
        raise ConfigError(f"--app {spec.text}: it returned {_kind(app)}, not a "
                          "tornado.web.Application or an HTTPServerConnectionDelegate")


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__module__}.{type(value).__qualname__}"

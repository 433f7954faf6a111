"""--files DIR: a read-only file tree at /files/ with directory listings and no way out of DIR."""
from __future__ import annotations

import datetime
import os
import re
import stat
from typing import Any, TypedDict

import tornado.web
from tornado.web import url

from .base import BaseHandler
from .pages import StaticHandler

# %2F / %5C (encoded slashes), %00 and backslashes have no business in a file path here
_FORBIDDEN_RAW = re.compile(r"%2f|%5c|%00|\\", re.IGNORECASE)


def human_size(size: int) -> str:
    """A size as people read it: 512 B, 4.0 KiB, 1.2 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class _Entry(TypedDict):
    """One row of a directory listing (templates/files.html)."""

    name: str
    is_dir: bool
    size: str
    modified: str


class FilesHandler(StaticHandler):
    """Serves files (ETag, Last-Modified, Range from StaticFileHandler) and lists directories."""

    def initialize(self, path: str, default_filename: str | None = None) -> None:  # type: ignore[override]
        super().initialize(path=path, default_filename=None)

    @classmethod
    def get_cache_time(cls, path: str, modified: Any, mime_type: str) -> int:
        return 0  # user files change; revalidate with ETag/Last-Modified instead of caching

    async def get(self, path: str, include_body: bool = True) -> None:
        raw_path = self.request.path
        if _FORBIDDEN_RAW.search(raw_path):
            raise tornado.web.HTTPError(404, "No such file")
        parts = [p for p in path.split("/") if p]
        if any(p.startswith(".") for p in parts):
            # dot files and '..' are never served
            raise tornado.web.HTTPError(404, "No such file")
        await super().get(path, include_body)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        real_root = os.path.realpath(root)
        resolved = os.path.realpath(absolute_path)
        if not (resolved + os.sep).startswith(real_root.rstrip(os.sep) + os.sep):
            raise tornado.web.HTTPError(403, "That path leaves the shared directory")
        if os.path.isdir(resolved):
            if not self.request.path.endswith("/"):
                self.redirect(self.request.path + "/", permanent=True)
            else:
                self._render_listing(resolved)
            return None
        return super().validate_absolute_path(root, absolute_path)

    def _render_listing(self, directory: str) -> None:
        entries: list[_Entry] = []
        try:
            scanned = list(os.scandir(directory))
        except OSError:
            raise tornado.web.HTTPError(403, "This directory cannot be read") from None
        for entry in scanned:
            if entry.name.startswith("."):
                continue
            try:
                info = entry.stat()
            except OSError:
                continue  # a dangling symlink: nothing to serve
            is_dir = stat.S_ISDIR(info.st_mode)
            entries.append({
                "name": entry.name + ("/" if is_dir else ""),
                "is_dir": is_dir,
                "size": "" if is_dir else human_size(info.st_size),
                "modified": datetime.datetime.fromtimestamp(info.st_mtime, datetime.UTC)
                .strftime("%Y-%m-%d %H:%M UTC"),
            })
        entries.sort(key=lambda e: (not e["is_dir"], e["name"].lower()))
        relative = self.path.strip("/")
        crumbs = []
        walked = ""
        for part in [p for p in relative.split("/") if p]:
            walked += part + "/"
            crumbs.append((part, walked))
        self.set_header("Cache-Control", "no-cache")
        self.render("files.html", entries=entries, crumbs=crumbs, current="/" + relative)


class FilesRedirectHandler(BaseHandler):
    """GET /files: a permanent redirect to /files/ (with the server's headers, unlike Tornado's)."""

    def get(self) -> None:
        self.redirect("/files/", permanent=True)

    head = get


def default_handlers(directory: str) -> list[Any]:
    """Routes for a shared directory (only mounted when --files is set)."""
    return [
        url(r"/files", FilesRedirectHandler),
        url(r"/files/(.*)", FilesHandler, {"path": directory}, name="files"),
    ]

"""The OpenAPI 3.1 document of an Application, generated from its routing table and its handlers' metadata."""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import pydantic
import tornado.routing
import tornado.web
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    SkipJsonSchema,
    models_json_schema,
)
from pydantic_core import core_schema

from server import __version__

from ..base import ApiHandler
from .limits import resolve_settings
from .metadata import HEADERS, SECURITY_SCHEMES, Operation, Param, Response, first_line, is_model

# keyed as models_json_schema keys it (Any: pydantic's key type names its private PydanticDataclass)
Refs = Mapping[tuple[Any, JsonSchemaMode], Mapping[str, Any]]

OPENAPI_VERSION = "3.1.0"
TITLE = "tornado-hps"
SCHEMA_REF = "#/components/schemas/{model}"
ERROR_REF = MappingProxyType({"$ref": SCHEMA_REF.format(model="Error")})
PROBLEMS_KEY = "x-problems"


# --- the error body every /api/ error has, and the common errors the generator adds ---

class ErrorDetail(pydantic.BaseModel):
    """What went wrong."""

    model_config = pydantic.ConfigDict(extra="forbid")

    status: int = pydantic.Field(ge=400, le=599, description="the HTTP status, repeated")
    message: str = pydantic.Field(description="what went wrong, safe to show; never exception text")
    # absent rather than null when no single input is at fault
    field: str | SkipJsonSchema[None] = pydantic.Field(
        default=None, exclude_if=lambda value: value is None,
        description="the input at fault (body field, query or path parameter), when one is")


class Error(pydantic.BaseModel):
    """The body of every JSON API error (4xx and 5xx)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    error: ErrorDetail


_SERVER_FAULT = Response("an unexpected fault in the server; the body never holds exception text")
_BUSY = Response("the server is busy: --max-concurrency API requests are in flight",
                 headers=("Retry-After",))
_BODY_ERRORS = (
    (400, Response("the body is not valid JSON (NaN and over-deep nesting included)")),
    (413, Response("the body is larger than --max-body-size (answered from the request head)")),
    (415, Response("the body is not declared as 'Content-Type: application/json'")),
)
_MODEL_ERROR = (422, Response("a body field is missing, unknown or of the wrong type, or the "
                              "body is not an object; 'field' names it"))

_DESCRIPTION = """\
The JSON API of tornado-hps, generated from the server's route table and its request and
response models.

Every error of the API answers with the `Error` schema:
`{"error": {"status": 422, "message": "name: required", "field": "name"}}` (`field` only when one
input is at fault). An unknown path under `/api/` answers 404, a method a path does not list
answers 405 with an `Allow` header, both with that body. Beyond `--max-concurrency` API requests
in flight the server answers 503 with `Retry-After`.
"""


# --- the routing table, and the document built from it ---

class Route(NamedTuple):
    """One path rule of an Application: its name, regex, handler class and reversible matcher."""

    name: str | None
    regex: re.Pattern[str]
    handler: type[tornado.web.RequestHandler]
    matcher: tornado.routing.PathMatches

    @property
    def pattern(self) -> str:
        """The route's regex as written (without the $ Tornado appends)."""
        return self.regex.pattern.removesuffix("$")


def routes_of(router: tornado.routing.Router) -> Iterator[Route]:
    """Every path rule under a router (host-specific rules included), in matching order."""
    for rule in getattr(router, "rules", ()):
        target = rule.target
        if isinstance(target, tornado.routing.Router):
            yield from routes_of(target)
        elif (isinstance(rule.matcher, tornado.routing.PathMatches) and isinstance(target, type)
              and issubclass(target, tornado.web.RequestHandler)):
            yield Route(rule.name, rule.matcher.regex, target, rule.matcher)


def is_api_route(route: Route) -> bool:
    """Whether a route belongs in the document: a JSON API handler or a path under /api/."""
    if getattr(route.handler, "openapi_excluded", None):
        return False
    return issubclass(route.handler, ApiHandler) or route.pattern.startswith("/api/")


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    """The HTTP methods (lower case) a handler class implements (Tornado's default is a 405)."""
    return [m.lower() for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower(), None)
            is not getattr(tornado.web.RequestHandler, m.lower(), None)]


def build_openapi(application: tornado.web.Application) -> dict[str, Any]:
    """Generate the OpenAPI 3.1 document of an Application's JSON API from its routes and models.

    What the document cannot describe truthfully (a method without @documented metadata, a
    regex group without a name, a method that cannot take its route's path arguments, a route
    that is no path template) is listed under the top-level ``x-problems``; tests insist it is
    empty. Undocumented methods still appear, flagged, so the document never hides a route.
    """
    problems: list[str] = []
    routes = []
    models: list[tuple[type[pydantic.BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for route in routes_of(application.default_router):
        if not is_api_route(route):
            continue
        operations = {}
        for method in implemented_methods(route.handler):
            func = getattr(route.handler, method)
            where = f"{route.handler.__module__}.{route.handler.__qualname__}.{method}"
            operation = getattr(func, "openapi_operation", None)
            if operation is None:
                problems.append(f"{method.upper()} {route.pattern} ({where}) has no @documented "
                                "metadata")
            else:
                models.extend(_models_of(operation))
            if not _takes_path_arguments(func, route.regex):
                # Tornado passes every regex group to the method: this one would answer 500
                problems.append(f"{method.upper()} {route.pattern} ({where}) cannot take the "
                                f"route's {route.regex.groups} path argument(s): it answers 500")
            operations[method] = operation
        path, names = _path_template(route, operations.values(), problems)
        if path is not None:
            routes.append((route, path, names, operations))

    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=SCHEMA_REF,
                                           schema_generator=ServerJsonSchema)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for route, path, names, operations in routes:
        item = paths.setdefault(path, {})
        module = route.handler.__module__
        for method, operation in operations.items():
            op_id = f"{method}-{route.name or slug(path)}"
            if operation is None:
                item[method] = {"operationId": op_id, "summary": "undocumented",
                                "x-undocumented": True,
                                "responses": {"default": {"description": "not documented"}}}
                continue
            op_tags = operation.tags or (module.rsplit(".", 1)[-1],)
            for tag in op_tags:
                tags.setdefault(tag, _tag_description(module, tag))
            item[method] = _operation_object(method, op_id, operation, route.handler, names,
                                             op_tags, refs)

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": __version__, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": name, "description": text} if text else {"name": name}
                 for name, text in tags.items()],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "headers": _plain(HEADERS),
            "securitySchemes": _plain(SECURITY_SCHEMES),
            "responses": {
                "NotFound": {"description": "no such path under /api/ (or no such resource)",
                             "content": _json_content(ERROR_REF)},
                "MethodNotAllowed": {
                    "description": "the path does not implement this method; Allow lists those "
                                   "it does",
                    "headers": {"Allow": {"$ref": "#/components/headers/Allow"}},
                    "content": _json_content(ERROR_REF)},
            },
        },
    }
    resolve_settings(document, application.settings.get("config"), problems)
    if problems:
        document[PROBLEMS_KEY] = problems
    return document


def _tag_description(module: str, tag: str) -> str:
    """A tag named after the handler's module, or a package it is in, has that one's docstring."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if parts[end - 1] == tag:
            return first_line(sys.modules[".".join(parts[:end])].__doc__)
    return ""


class ServerJsonSchema(GenerateJsonSchema):
    """JSON Schema of models as this server writes them: every field is sent, defaults included."""

    def field_is_required(self, field: Any, total: bool) -> bool:
        """In responses a field is required unless left out of output (write_model sends all)."""
        if self.mode == "serialization" and field["type"] != "typed-dict-field":
            return (not field.get("serialization_exclude")
                    and field.get("serialization_exclude_if") is None)
        return super().field_is_required(field, total)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """A field's schema; in responses without its default, which a reader never sees applied."""
        json_schema = super().default_schema(schema)
        if self.mode == "serialization":
            json_schema.pop("default", None)
        return json_schema


def _models_of(operation: Operation) -> Iterator[tuple[type[pydantic.BaseModel], JsonSchemaMode]]:
    if is_model(operation.request):
        yield operation.request, "validation"
    for response in operation.responses.values():
        if is_model(response.body):
            yield response.body, "serialization"


def _takes_path_arguments(func: Callable[..., Any], regex: re.Pattern[str]) -> bool:
    """Whether Tornado's call with the route's groups (positional; keywords if named) binds."""
    if regex.groupindex:
        args: tuple[str, ...] = ()
        kwargs = dict.fromkeys(regex.groupindex, "x")
    else:
        args, kwargs = ("x",) * regex.groups, {}
    try:
        inspect.signature(func).bind(None, *args, **kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return True


def _path_template(route: Route, operations: Iterable[Operation | None],
                   problems: list[str]) -> tuple[str | None, list[str]]:
    """The route's path with {name} for each regex group, and those names (None: no template)."""
    groups = route.regex.groups
    named = {index: name for name, index in route.regex.groupindex.items()}
    declared: list[str] = []
    for operation in operations:
        if operation is not None and len(operation.path) > len(declared):
            declared = list(operation.path)
    names = []
    for index in range(1, groups + 1):
        if index in named:
            names.append(named[index])
        elif index <= len(declared):
            names.append(declared[index - 1])
        else:
            problems.append(f"{route.pattern}: group {index} has no parameter name "
                            "(path= in @documented)")
            names.append(f"param{index}")
    # reverse with placeholders that url-escaping leaves alone, then put in the {name} templates
    tokens = [f"zzopenapi{index}zz" for index in range(groups)]
    try:
        path = route.matcher.reverse(*tokens)
    except (ValueError, AssertionError):
        path = None
    if path is None:
        problems.append(f"{route.pattern} ({route.handler.__qualname__}) cannot be written as a "
                        "path template; mark its class @excluded_from_docs or give it a plain path")
        return None, names
    for token, name in zip(tokens, names, strict=True):
        path = path.replace(token, "{" + name + "}")
    return path, names


def _operation_object(method: str, op_id: str, operation: Operation, handler: type,
                      path_names: list[str], tags: tuple[str, ...], refs: Refs) -> dict[str, Any]:
    result: dict[str, Any] = {"operationId": op_id, "summary": operation.summary,
                              "tags": list(tags)}
    if operation.description:
        result["description"] = operation.description
    parameters = [_parameter(name, "path", operation.path.get(name, Param("string", ""))
                             ._replace(required=True))
                  for name in path_names]
    parameters += [_parameter(name, "query", param) for name, param in operation.query.items()]
    if parameters:
        result["parameters"] = parameters
    if operation.request is not None:
        schema = _schema_of(operation.request, "validation", refs)
        body: dict[str, Any] = {"required": True,
                                "content": _json_content(schema, operation.request_example)}
        if isinstance(operation.request, Mapping):
            description = operation.request.get("description", "")
        else:
            description = first_line(operation.request.__doc__)
        if description:
            body["description"] = description
        result["requestBody"] = body
    responses = sorted(_all_responses(operation, handler).items())
    result["responses"] = {str(status): _response_object(method, status, response, refs)
                           for status, response in responses}
    if operation.security is not None:
        result["security"] = [{operation.security: []}]
    return result


def _all_responses(operation: Operation, handler: type) -> dict[int, Response]:
    """The operation's own responses merged with the common errors that apply to it."""
    common: list[tuple[int, Response]] = []
    if issubclass(handler, ApiHandler):
        if operation.request is not None:
            common.extend(_BODY_ERRORS)
            if is_model(operation.request):
                common.append(_MODEL_ERROR)
        if operation.capped:
            common.append((503, _BUSY))
        common.append((500, _SERVER_FAULT))
    merged = dict(operation.responses)
    for status, response in common:
        own = merged.get(status)
        if own is None:
            merged[status] = response
        else:
            # both can happen: say both, keep the handler's body, offer every header
            merged[status] = dataclasses.replace(
                own, description=f"{own.description}; or {response.description}",
                headers=tuple(dict.fromkeys(own.headers + response.headers)))
    return merged


def _response_object(method: str, status: int, response: Response, refs: Refs) -> dict[str, Any]:
    result: dict[str, Any] = {"description": response.description}
    if response.headers:
        result["headers"] = {name: {"$ref": f"#/components/headers/{name}"}
                             for name in response.headers}
    # a bare description of a 4xx/5xx is the common error body; below 400 it means no body
    body = Error if response.body is None and status >= 400 else response.body
    if body is not None and method != "head":
        schema = _schema_of(body, "serialization", refs)
        result["content"] = {response.media_type: {"schema": schema}}
    return result


def _schema_of(body: Any, mode: JsonSchemaMode, refs: Refs) -> dict[str, Any]:
    if is_model(body):
        return dict(refs[(body, mode)])
    plain: dict[str, Any] = _plain(body)
    return plain


def _parameter(name: str, where: str, param: Param) -> dict[str, Any]:
    schema = {"type": param.schema} if isinstance(param.schema, str) else _plain(param.schema)
    result: dict[str, Any] = {"name": name, "in": where, "required": bool(param.required),
                              "schema": schema}
    if param.description:
        result["description"] = param.description
    if param.example is not None:
        result["example"] = _plain(param.example)
    return result


def _json_content(schema: Mapping[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _plain(schema)}
    if example is not None:
        media["example"] = _plain(example)  # a copy: documents must not share the metadata's
    return {"application/json": media}


def _plain(value: Any) -> Any:
    """A deep copy with read-only mappings and tuples as plain dicts and lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def slug(path: str) -> str:
    """A path or name as an identifier: its runs of other characters as '-' ('root' for '/')."""
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"



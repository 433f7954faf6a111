"""OpenAPI 3.1 of the JSON API, generated from the routes and the models; /api/docs shows it."""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import sys
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, TypeVar

import pydantic
import tornado.routing
import tornado.web
from pydantic.json_schema import (GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema,
                                  models_json_schema)
from pydantic_core import core_schema
from tornado.web import url

from server import __version__

from ..base import ApiHandler, PageHandler

log = logging.getLogger(__name__)

FuncT = TypeVar("FuncT", bound=Callable[..., Any])
ClassT = TypeVar("ClassT", bound=type)
Refs = Mapping[tuple[type[pydantic.BaseModel], str], Mapping[str, Any]]

OPENAPI_VERSION = "3.1.0"
TITLE = "tornado-hps"
SCHEMA_REF = "#/components/schemas/{model}"
ERROR_REF = MappingProxyType({"$ref": SCHEMA_REF.format(model="Error")})
# the built document lives in its Application's settings: one per app, no module state
SETTINGS_KEY = "openapi_built"
PROBLEMS_KEY = "x-problems"

ANY_JSON: Mapping[str, Any] = MappingProxyType({"description": "any JSON document"})
"""A JSON Schema that accepts every JSON document (for bodies without a model)."""

SETTING_KEY = "x-setting"


def from_settings(**keywords: str) -> dict[str, Any]:
    """JSON Schema keywords whose values are settings, resolved when the document is built.

    ``from_settings(maximum="slow_max_ms")`` in a parameter's schema (or a model field's
    ``json_schema_extra``) becomes ``"maximum": <--slow-max-ms in force>``: the document states
    the bounds the handlers enforce with the settings the server runs with.
    """
    return {SETTING_KEY: keywords}


# --- the metadata handlers carry ---

class Param(NamedTuple):
    """A path or query parameter: JSON type (or JSON Schema), meaning, required, an example."""

    schema: str | Mapping[str, Any]
    description: str
    required: bool = False
    example: Any = None


@dataclasses.dataclass(frozen=True)
class Response:
    """One documented response: what it means, its body (model, JSON Schema or none), headers."""

    description: str
    body: type[pydantic.BaseModel] | Mapping[str, Any] | None = None
    headers: tuple[str, ...] = ()
    media_type: str = "application/json"

    def __post_init__(self) -> None:
        if isinstance(self.body, Mapping):
            # metadata lives as long as its class: keep a JSON Schema given as a dict read-only
            object.__setattr__(self, "body", MappingProxyType(dict(self.body)))
        unknown = [name for name in self.headers if name not in HEADERS]
        if unknown:
            raise ValueError(f"unknown response headers {unknown}: add them to HEADERS")


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Operation:
    """The documentation of one handler method, attached by @documented."""

    summary: str
    description: str = ""
    request: type[pydantic.BaseModel] | Mapping[str, Any] | None = None
    request_example: Any = None
    responses: Mapping[int, Response] = dataclasses.field(default_factory=_empty)
    path: Mapping[str, Param] = dataclasses.field(default_factory=_empty)
    query: Mapping[str, Param] = dataclasses.field(default_factory=_empty)
    security: str | None = None
    capped: bool = True
    tags: tuple[str, ...] = ()


def documented(summary: str, *, description: str = "",
               request: type[pydantic.BaseModel] | Mapping[str, Any] | None = None,
               request_example: Any = None,
               responses: Mapping[int, type[pydantic.BaseModel] | Response | str] | None = None,
               path: Mapping[str, Param | tuple[Any, ...] | str] | None = None,
               query: Mapping[str, Param | tuple[Any, ...] | str] | None = None,
               security: str | None = None, capped: bool = True,
               tags: tuple[str, ...] = ()) -> Callable[[FuncT], FuncT]:
    """Attach OpenAPI metadata to a handler method (get/post/delete/...); the method is unchanged.

    ``responses`` maps a status to a response model, a description (an error body for ≥ 400, no
    body below) or a :class:`Response`. ``path`` names the route's regex groups in order;
    ``query`` lists query parameters; both take :class:`Param`, a tuple of its fields or a plain
    description. ``security`` names a scheme of :data:`SECURITY_SCHEMES`; ``capped=False`` says
    the --max-concurrency cap never refuses the method. The generator adds the common errors
    (400, 413, 415, 422, 503, 500) where they apply.
    """
    if security is not None and security not in SECURITY_SCHEMES:
        raise ValueError(f"unknown security scheme {security!r}")
    if isinstance(request, Mapping):
        request = MappingProxyType(dict(request))
    operation = Operation(
        summary=summary, description=description, request=request,
        request_example=request_example,
        responses=MappingProxyType({int(status): _response(status, value)
                                    for status, value in (responses or {}).items()}),
        path=MappingProxyType({name: _param(value) for name, value in (path or {}).items()}),
        query=MappingProxyType({name: _param(value) for name, value in (query or {}).items()}),
        security=security, capped=capped, tags=tuple(tags))

    def attach(method: FuncT) -> FuncT:
        method.openapi_operation = operation  # type: ignore[attr-defined]
        return method
    return attach


def excluded_from_docs(reason: str) -> Callable[[ClassT], ClassT]:
    """Mark a handler class whose routes are deliberately not operations (say why)."""
    def mark(cls: ClassT) -> ClassT:
        cls.openapi_excluded = reason  # type: ignore[attr-defined]
        return cls
    return mark


def _response(status: int, value: type[pydantic.BaseModel] | Response | str) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return Response(value)
    if _is_model(value):
        return Response(_first_line(value.__doc__) or value.__name__, body=value)
    raise TypeError(f"response {status}: expected a model, a description or a Response")


def _param(value: Param | tuple[Any, ...] | str) -> Param:
    param = Param("string", value) if isinstance(value, str) else Param(*value)
    if isinstance(param.schema, Mapping):
        param = param._replace(schema=MappingProxyType(dict(param.schema)))
    return param


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, pydantic.BaseModel)


# --- the error body every /api/ error has, and the other shared parts ---

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


def _header(description: str, **schema: Any) -> Mapping[str, Any]:
    return MappingProxyType({"description": description, "schema": MappingProxyType(schema)})


HEADERS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "Retry-After": _header("seconds to wait before trying again", type="integer", minimum=0),
    "Location": _header("the URL of the created resource", type="string"),
    "WWW-Authenticate": _header("the authentication scheme to use (Bearer)", type="string"),
    "Allow": _header("the methods this path implements, comma-separated", type="string"),
})
"""Response headers operations may name (components.headers)."""

SECURITY_SCHEMES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "adminToken": MappingProxyType({
        "type": "http", "scheme": "bearer",
        "description": "the server's --admin-token, as 'Authorization: Bearer TOKEN'"}),
})
"""Authentication schemes operations may name (components.securitySchemes)."""

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


# --- the generator ---

@dataclasses.dataclass(frozen=True)
class Built:
    """One Application's document, built once: as a dict, as JSON bytes and as the page's view."""

    document: Mapping[str, Any]
    json: bytes
    view: DocsView


def built_for(application: tornado.web.Application) -> Built:
    """The OpenAPI document of this Application, built on first use and kept in its settings."""
    built = application.settings.get(SETTINGS_KEY)
    if built is None:
        document = build_openapi(application)
        for problem in document.get(PROBLEMS_KEY, ()):
            log.warning("OpenAPI: %s", problem)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        built = Built(document=document, json=body, view=docs_view(document))
        application.settings[SETTINGS_KEY] = built
    return built


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
    models: list[tuple[type[pydantic.BaseModel], str]] = [(Error, "serialization")]
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
            op_id = f"{method}-{route.name or _slug(path)}"
            if operation is None:
                item[method] = {"operationId": op_id, "summary": "undocumented",
                                "x-undocumented": True,
                                "responses": {"default": {"description": "not documented"}}}
                continue
            own_tag = module.rsplit(".", 1)[-1]
            op_tags = operation.tags or (own_tag,)
            for tag in op_tags:
                # a module's tag is described by the module's docstring
                described = _first_line(sys.modules[module].__doc__) if tag == own_tag else ""
                tags.setdefault(tag, described)
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


def _models_of(operation: Operation) -> Iterator[tuple[type[pydantic.BaseModel], str]]:
    if _is_model(operation.request):
        yield operation.request, "validation"  # type: ignore[misc]
    for response in operation.responses.values():
        if _is_model(response.body):
            yield response.body, "serialization"  # type: ignore[misc]


def _takes_path_arguments(func: Callable[..., Any], regex: re.Pattern[str]) -> bool:
    """Whether Tornado's call with the route's groups (positional; keywords if named) binds."""
    if regex.groupindex:
        args: tuple[str, ...] = ()
        kwargs = {name: "x" for name in regex.groupindex}
    else:
        args, kwargs = ("x",) * regex.groups, {}
    try:
        inspect.signature(func).bind(None, *args, **kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (a builtin): trust it
        return True
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
    for token, name in zip(tokens, names):
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
        if _is_model(operation.request):
            description = _first_line(operation.request.__doc__)
        else:
            description = operation.request.get("description", "")  # type: ignore[union-attr]
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
            if _is_model(operation.request):
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


def _schema_of(body: Any, mode: str, refs: Refs) -> dict[str, Any]:
    if _is_model(body):
        return dict(refs[(body, mode)])
    return _plain(body)


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


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"


# --- the docs page's view, derived from the document (so the page and the JSON agree) ---

@dataclasses.dataclass(frozen=True)
class TypePart:
    """A piece of a type label: text, linked to a schema's anchor when it names one."""

    text: str
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class FieldRow:
    """One row of a field table: name, type, whether required, description and constraints."""

    name: str
    type: tuple[TypePart, ...]
    required: bool
    description: str
    notes: tuple[str, ...]
    location: str = ""


@dataclasses.dataclass(frozen=True)
class FieldTable:
    """A titled table of fields: a model's properties, a body or an operation's parameters."""

    title: str
    anchor: str | None
    type: tuple[TypePart, ...]
    description: str
    rows: tuple[FieldRow, ...]
    example: str | None = None


@dataclasses.dataclass(frozen=True)
class ResponseRow:
    """One documented status of an operation."""

    status: str
    kind: str
    description: str
    body: tuple[TypePart, ...]
    media_type: str
    headers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OperationView:
    """One method of one path, ready to render."""

    method: str
    path: str
    anchor: str
    summary: str
    description: str
    security: str | None
    tables: tuple[FieldTable, ...]
    responses: tuple[ResponseRow, ...]
    response_tables: tuple[FieldTable, ...]


@dataclasses.dataclass(frozen=True)
class PathView:
    """A path and its operations."""

    path: str
    anchor: str
    operations: tuple[OperationView, ...]


@dataclasses.dataclass(frozen=True)
class DocsView:
    """Everything the docs page shows."""

    title: str
    version: str
    openapi: str
    paths: tuple[PathView, ...]
    schemas: tuple[FieldTable, ...]
    problems: tuple[str, ...]


def docs_view(document: Mapping[str, Any]) -> DocsView:
    """Turn an OpenAPI document into the rows and labels the docs page renders."""
    schemas = document.get("components", {}).get("schemas", {})
    paths = tuple(
        PathView(path=path, anchor="path-" + _slug(path),
                 operations=tuple(operation_view(path, method, op, schemas)
                                  for method, op in item.items()))
        for path, item in document.get("paths", {}).items())
    info = document.get("info", {})
    return DocsView(title=info.get("title", TITLE), version=info.get("version", ""),
                    openapi=document.get("openapi", ""), paths=paths,
                    schemas=tuple(schema_table(name, schema, schemas)
                                  for name, schema in schemas.items()),
                    problems=tuple(document.get(PROBLEMS_KEY, ())))


def operation_view(path: str, method: str, op: Mapping[str, Any],
                   schemas: Mapping[str, Any]) -> OperationView:
    """One operation as tables: parameters, request body, responses, success bodies."""
    tables = []
    params = op.get("parameters", [])
    if params:
        tables.append(FieldTable(title="Parameters", anchor=None, type=(), description="",
                                 rows=tuple(_parameter_row(param) for param in params)))
    body = op.get("requestBody")
    if body:
        media = next(iter(body["content"].values()))
        tables.append(_body_table("Request body", media, body.get("description", ""), schemas))
    rows, response_tables = [], []
    for status, response in op.get("responses", {}).items():
        media_type, media = next(iter(response.get("content", {}).items()), ("", {}))
        schema = media.get("schema")
        rows.append(ResponseRow(status=status, kind=_status_kind(status),
                                description=response.get("description", ""),
                                body=type_label(schema) if schema is not None else (),
                                media_type=media_type, headers=tuple(response.get("headers", {}))))
        if status.startswith("2") and schema is not None and field_rows(schema, schemas):
            response_tables.append(_body_table(f"{status} response body", media, "", schemas))
    security = next(iter(op["security"][0]), None) if op.get("security") else None
    return OperationView(method=method.upper(), path=path,
                         anchor=op.get("operationId", f"{method}-{_slug(path)}"),
                         summary=op.get("summary", ""), description=op.get("description", ""),
                         security=security, tables=tuple(tables), responses=tuple(rows),
                         response_tables=tuple(response_tables))


def schema_table(name: str, schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> FieldTable:
    """The field table of one component schema."""
    return FieldTable(title=name, anchor=_schema_anchor(name),
                      type=(TypePart(schema.get("type", "any")),),
                      description=schema.get("description", ""), rows=field_rows(schema, schemas))


def _parameter_row(param: Mapping[str, Any]) -> FieldRow:
    schema = param.get("schema", {})
    example = (f"example: {_compact(param['example'])}",) if "example" in param else ()
    return FieldRow(name=param["name"], type=type_label(schema),
                    required=bool(param.get("required")),
                    description=param.get("description", ""), location=param["in"],
                    notes=schema_notes(schema) + example)


def _body_table(title: str, media: Mapping[str, Any], description: str,
                schemas: Mapping[str, Any]) -> FieldTable:
    schema = media.get("schema", {})
    example = media.get("example")
    return FieldTable(title=title, anchor=None, type=type_label(schema),
                      description=description or _resolve(schema, schemas).get("description", ""),
                      rows=field_rows(schema, schemas),
                      example=_compact(example) if example is not None else None)


def field_rows(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> tuple[FieldRow, ...]:
    """One row per property of an object schema (none for anything else)."""
    schema = _resolve(schema, schemas)
    required = set(schema.get("required", ()))
    return tuple(FieldRow(name=name, type=type_label(prop), required=name in required,
                          description=prop.get("description", ""), notes=schema_notes(prop))
                 for name, prop in schema.get("properties", {}).items())


def type_label(schema: Mapping[str, Any]) -> tuple[TypePart, ...]:
    """A short, human type for a JSON Schema: 'integer', 'array of MessageOut', 'string or null'."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return (TypePart(name, _schema_anchor(name)),)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts: list[TypePart] = []
            for index, option in enumerate(schema[key]):
                if index:
                    parts.append(TypePart(" or "))
                parts.extend(type_label(option))
            return tuple(parts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return (TypePart(" or ".join(kind)),)
    if kind == "array":
        return (TypePart("array of "),) + type_label(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return (TypePart("object of "),) + type_label(schema["additionalProperties"])
    if "const" in schema:
        return (TypePart(_compact(schema["const"])),)
    if kind:
        return (TypePart(kind + (f" ({schema['format']})" if "format" in schema else "")),)
    return (TypePart("any JSON"),)


def schema_notes(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Constraints of a schema in words: allowed values, bounds, lengths, pattern, default."""
    notes = []
    if "enum" in schema:
        notes.append("one of: " + ", ".join(_compact(value) for value in schema["enum"]))
    for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):
        if key in schema:
            notes.append(f"{word} {schema[key]}")
    for key, text in (("minLength", "at least {} characters"),
                      ("maxLength", "at most {} characters"),
                      ("minItems", "at least {} items"), ("maxItems", "at most {} items")):
        if key in schema:
            notes.append(text.format(schema[key]))
    if "pattern" in schema:
        notes.append(f"matches {schema['pattern']}")
    if "default" in schema:
        notes.append(f"default: {_compact(schema['default'])}")
    return tuple(notes)


def _resolve(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = set()
    while "$ref" in schema and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _schema_anchor(name: str) -> str:
    return "schema-" + _slug(name)


def _status_kind(status: str) -> str:
    return {"2": "ok", "3": "redirect", "4": "client", "5": "server"}.get(status[:1], "other")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- the handlers ---

class OpenApiHandler(ApiHandler):
    """GET /api/openapi.json: this server's OpenAPI 3.1 document."""

    @documented("This OpenAPI 3.1 document",
                description="Generated once per server from the route table and the request and "
                            "response models; revalidate (Cache-Control: no-cache) for changes.",
                responses={200: Response("the OpenAPI document",
                                         body={"type": "object",
                                               "required": ["openapi", "info", "paths"]})})
    async def get(self) -> None:
        built = built_for(self.application)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(built.json)


class ApiDocsHandler(PageHandler):
    """GET /api/docs: the OpenAPI document as a readable page, rendered here (no JavaScript)."""

    @documented("This documentation as an HTML page",
                responses={200: Response("the API documentation page", body={"type": "string"},
                                         media_type="text/html")})
    async def get(self) -> None:
        built = built_for(self.application)
        self.set_header("Cache-Control", "no-cache")
        self.render("api_docs.html", docs=built.view)


default_handlers = [
    url(r"/api/openapi.json", OpenApiHandler, name="api-openapi"),
    url(r"/api/docs", ApiDocsHandler, name="api-docs"),
]

"""What handlers declare for the OpenAPI document: @documented and its parts, @excluded_from_docs."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard, TypeVar

import pydantic

FuncT = TypeVar("FuncT", bound=Callable[..., Any])
ClassT = TypeVar("ClassT", bound=type)

ANY_JSON: Mapping[str, Any] = MappingProxyType({"description": "any JSON document"})
"""A JSON Schema that accepts every JSON document (for bodies without a model)."""


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
        # the marker the generator reads back (a function attribute mypy does not model)
        method.openapi_operation = operation  # type: ignore[attr-defined]
        return method
    return attach


def excluded_from_docs(reason: str) -> Callable[[ClassT], ClassT]:
    """Mark a handler class whose routes are deliberately not operations (say why)."""
    def mark(cls: ClassT) -> ClassT:
        # the marker the generator reads back (set on any class it decorates)
        cls.openapi_excluded = reason  # type: ignore[attr-defined]
        return cls
    return mark


def _response(status: int, value: type[pydantic.BaseModel] | Response | str) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return Response(value)
    if is_model(value):
        return Response(first_line(value.__doc__) or value.__name__, body=value)
    raise TypeError(f"response {status}: expected a model, a description or a Response")


def _param(value: Param | tuple[Any, ...] | str) -> Param:
    param = Param("string", value) if isinstance(value, str) else Param(*value)
    if isinstance(param.schema, Mapping):
        param = param._replace(schema=MappingProxyType(dict(param.schema)))
    return param


def first_line(text: str | None) -> str:
    """The first line of a docstring ('' for none): a summary or a description."""
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def is_model(value: Any) -> TypeGuard[type[pydantic.BaseModel]]:
    """Whether a body is a pydantic model (else a JSON Schema or nothing)."""
    return isinstance(value, type) and issubclass(value, pydantic.BaseModel)


# --- what responses and operations may name ---

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


"""OpenAPI 3.1 of the JSON API, generated from the routes and the models; /api/docs shows it.

One module a job: :mod:`.metadata` (what handlers declare: ``@documented``),
:mod:`.limits` (``from_settings`` markers, resolved against the settings in force),
:mod:`.generate` (the document, from the routing table and the models) and :mod:`.views`
(the docs page's view and the two handlers). Importers use the names below.
"""
from .generate import (
    PROBLEMS_KEY,
    Error,
    ErrorDetail,
    Route,
    build_openapi,
    implemented_methods,
    is_api_route,
    routes_of,
)
from .limits import from_settings, resolve_settings
from .metadata import (
    ANY_JSON,
    HEADERS,
    SECURITY_SCHEMES,
    Operation,
    Param,
    Response,
    documented,
    excluded_from_docs,
)
from .views import (
    SETTINGS_KEY,
    ApiDocsHandler,
    Built,
    DocsView,
    OpenApiHandler,
    built_for,
    default_handlers,
    docs_view,
)

__all__ = [
    "ANY_JSON", "HEADERS", "PROBLEMS_KEY", "SECURITY_SCHEMES", "SETTINGS_KEY", "ApiDocsHandler",
    "Built", "DocsView", "Error", "ErrorDetail", "OpenApiHandler", "Operation", "Param",
    "Response", "Route", "build_openapi", "built_for", "default_handlers", "docs_view",
    "documented", "excluded_from_docs", "from_settings", "implemented_methods", "is_api_route",
    "resolve_settings", "routes_of",
]

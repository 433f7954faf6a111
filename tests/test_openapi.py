"""The OpenAPI document: valid 3.1, generated from every API route, and true when called."""
import inspect
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import jsonschema
import pydantic
import pytest
import tornado.escape
import tornado.web
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from handlers import openapi, schemas
from handlers.base import ApiHandler
from helpers import get_json, json_of, raw_http
from server import __version__
from server.rules import MAX_WHOLE_NUMBER

pytestmark = pytest.mark.gen_test(timeout=60)

ADMIN_TOKEN = "openapi-test-admin-token"
DOCUMENT_URI = "urn:tornado-hps:openapi"
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
ERROR = {"$ref": "#/components/schemas/Error"}
JSON = {"Content-Type": "application/json"}


# --- helpers ---

def app_of(http_server):
    """The Application the in-process server runs."""
    return http_server.http.request_callback


def api_routes(app):
    """Every route the document must describe, chosen apart from the generator's own rule."""
    routes = []
    for route in openapi.routes_of(app.default_router):
        if getattr(route.handler, "openapi_excluded", None):
            continue
        if route.regex.pattern.startswith("/api/") or issubclass(route.handler, ApiHandler):
            routes.append(route)
    return routes


def own_methods(handler):
    """The HTTP methods a handler class implements (the rest answer 405)."""
    return {m.lower() for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())}


def operations(document):
    """(path, method, operation) for every operation of the document, in document order."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def body_validator(document, schema):
    """A JSON Schema 2020-12 validator for a documented schema, its #/components refs resolved."""
    resource = Resource(contents=document, specification=DRAFT202012)
    registry = Registry().with_resource(DOCUMENT_URI, resource)
    rooted = json.loads(json.dumps(schema).replace('"#/components/',
                                                   f'"{DOCUMENT_URI}#/components/'))
    return jsonschema.Draft202012Validator(rooted, registry=registry)


def check_against_document(document, path, method, operation, response):
    """The status is one the operation lists, and a JSON body validates against its schema."""
    responses = operation["responses"]
    status = str(response.code)
    what = f"{method.upper()} {path} {status}"
    assert status in responses, f"{what} is not documented: {sorted(responses)}"
    documented = responses[status]
    content = documented.get("content", {})
    if method == "head" or not content:
        assert not response.body, f"{what}: a body where none is documented"
        return documented
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type in content, f"{what}: {media_type} is not in {list(content)}"
    if media_type == "application/json":
        body_validator(document, content[media_type]["schema"]).validate(json.loads(response.body))
    return documented


def example_url(path, operation):
    """The documented path with its example parameters filled in (query examples appended)."""
    query = {}
    for param in operation.get("parameters", []):
        value = param.get("example")
        where = f"{path}: {param['in']} parameter {param['name']}"
        if param["in"] == "path":
            assert value is not None, f"{where} has no example"
            path = path.replace("{" + param["name"] + "}", urllib.parse.quote(str(value), safe=""))
        elif param["in"] == "query":
            assert value is not None or not param.get("required"), f"{where} has no example"
            if value is not None:
                query[param["name"]] = value
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def local_urls(example, upstream):
    """The example with every http(s) URL pointed at the test's own upstream (no internet)."""
    if isinstance(example, str) and example.startswith(("http://", "https://")):
        return upstream + "/page"
    if isinstance(example, list):
        return [local_urls(item, upstream) for item in example]
    if isinstance(example, dict):
        return {key: local_urls(value, upstream) for key, value in example.items()}
    return example


def is_stream(operation):
    """Whether a success answer is an endless stream (read its head only)."""
    return any("text/event-stream" in response.get("content", {})
               for status, response in operation["responses"].items() if status.startswith("2"))


def is_json_api(item):
    """Whether a path's errors are JSON (its operations list the Error schema)."""
    return any(response.get("content", {}).get("application/json", {}).get("schema") == ERROR
               for operation in item.values() for response in operation["responses"].values())


class _RawResponse:
    """What the checks need of a raw HTTP answer (status, headers; a stream's body is not read)."""

    def __init__(self, raw):
        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        self.code = int(head[0].split()[1])
        self.headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        self.body = b""


# --- the document itself ---

async def test_document_is_valid_openapi_31(api):
    response = await api.get("/api/openapi.json")
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-cache"
    document = json_of(response)
    OpenAPIV31SpecValidator(document).validate()
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] == "tornado-hps"
    assert document["info"]["version"] == __version__
    assert document["servers"] == [{"url": "/"}]
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_every_request_and_response_model_is_a_component(api):
    document = json_of(await api.get("/api/openapi.json"))
    components = document["components"]["schemas"]
    models = [model for name, model in inspect.getmembers(schemas, inspect.isclass)
              if issubclass(model, pydantic.BaseModel) and model.__module__ == schemas.__name__
              and not name.startswith("_")]
    assert models
    for model in models:
        assert model.__name__ in components, f"{model.__name__} is not in components.schemas"
    assert components["Error"]["required"] == ["error"]
    detail = components["ErrorDetail"]
    assert set(detail["properties"]) == {"status", "message", "field"}
    assert set(detail["required"]) == {"status", "message"}


async def test_every_api_route_and_method_is_documented(api, http_server):
    document = json_of(await api.get("/api/openapi.json"))
    assert openapi.PROBLEMS_KEY not in document, "\n".join(document[openapi.PROBLEMS_KEY])
    assert {"/healthz", "/readyz", "/api/openapi.json", "/api/docs"} <= set(document["paths"])
    routes = api_routes(app_of(http_server))
    assert routes
    for route in routes:
        # a template is the route's when its parameters, filled in, match the route's regex
        matches = [path for path in document["paths"]
                   if route.regex.match(re.sub(r"\{[^}/]+\}", "x1", path))]
        assert len(matches) == 1, f"route {route.pattern} ({route.name}) is documented as {matches}"
        item = document["paths"][matches[0]]
        assert set(item) & set(METHODS) == own_methods(route.handler), route.pattern
        for method, operation in item.items():
            assert operation.get("summary"), (method, matches[0])
            assert not operation.get("x-undocumented"), (method, matches[0])
            assert operation["responses"], (method, matches[0])
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if status in ("400", "413", "415", "429", "500") and method != "head":
                # the common errors have the one error shape (a probe's 503 is its own report)
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR, (method, path, status)


async def test_no_page_static_file_or_websocket_route_is_documented(api):
    document = json_of(await api.get("/api/openapi.json"))
    for path in document["paths"]:
        assert path.startswith("/api/") or path in ("/healthz", "/readyz"), path
    assert "/guestbook/live" not in document["paths"]


async def test_document_is_built_once_per_application(api, http_server):
    first = await api.get("/api/openapi.json")
    built = app_of(http_server).settings[openapi.SETTINGS_KEY]
    second = await api.get("/api/openapi.json")
    await api.get("/api/docs")
    assert app_of(http_server).settings[openapi.SETTINGS_KEY] is built
    assert first.body == second.body == built.json
    # no-cache means revalidate: an unchanged document costs a 304 and no body
    again = await api.get("/api/openapi.json", headers={"If-None-Match": first.headers["Etag"]})
    assert again.code == 304 and not again.body


# --- the document is true ---

@pytest.mark.server_settings(admin_token=ADMIN_TOKEN)
async def test_every_documented_operation_answers_as_documented(api, http_port, upstream):
    document = json_of(await api.get("/api/openapi.json"))
    called = 0
    for path, method, operation in operations(document):
        if operation.get("x-undocumented"):
            continue  # the test above fails for it; nothing here says how to call it
        target = example_url(path, operation)
        headers = {}
        if operation.get("security"):
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        body = None
        if "requestBody" in operation:
            media = operation["requestBody"]["content"]["application/json"]
            assert "example" in media, f"{method.upper()} {path}: the request body has no example"
            body_validator(document, media["schema"]).validate(media["example"])
            body = local_urls(media["example"], upstream)
        if is_stream(operation):
            request = f"{method.upper()} {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            response = _RawResponse(await raw_http(http_port, request, timeout=1.0))
        else:
            response = await api.call(method.upper(), target, body=body, headers=headers)
        documented = check_against_document(document, path, method, operation, response)
        assert response.code < 400, f"{method.upper()} {target} with the examples: {response.code}"
        for header in documented.get("headers", {}):
            assert header in response.headers, f"{method.upper()} {path}: no {header} header"
        called += 1
    assert called >= 15


@pytest.mark.server_settings(admin_token=ADMIN_TOKEN, max_body_size=4096)
async def test_documented_errors_answer_as_documented(api):
    document = json_of(await api.get("/api/openapi.json"))
    for path, method, operation in operations(document):
        if operation.get("x-undocumented") or is_stream(operation):
            continue
        target = example_url(path, operation)
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if operation.get("security") else {}
        checks = []
        if "requestBody" in operation:
            checks += [
                (400, b'{"not": json', JSON),
                (415, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}),
                (413, json.dumps({"data": "x" * 5000}).encode(), JSON),
            ]
            if "$ref" in operation["requestBody"]["content"]["application/json"]["schema"]:
                checks.append((422, b'{"surely_not_a_field": 1}', JSON))
        for expected, body, headers in checks:
            response = await api.call(method.upper(), target, body=body,
                                      headers={**headers, **auth})
            assert response.code == expected, (method, path, expected, response.code)
            check_against_document(document, path, method, operation, response)
        for param in operation.get("parameters", []):
            if param["in"] == "query" and param.get("required"):
                response = await api.call(method.upper(), path, headers=auth)
                assert response.code >= 400
                check_against_document(document, path, method, operation, response)
                assert json_of(response)["error"]["field"] == param["name"]
        if operation.get("security"):
            for headers, expected in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
                response = await api.call(method.upper(), target, headers=headers)
                assert response.code == expected
                documented = check_against_document(document, path, method, operation, response)
                for header in documented.get("headers", {}):
                    assert header in response.headers


async def test_methods_a_path_does_not_list_get_405_with_allow(api):
    document = json_of(await api.get("/api/openapi.json"))
    not_allowed = document["components"]["responses"]["MethodNotAllowed"]
    validator = body_validator(document, not_allowed["content"]["application/json"]["schema"])
    for path, item in document["paths"].items():
        listed = {method.upper() for method in item if method in METHODS}
        assert "OPTIONS" not in listed
        # OPTIONS: a method Tornado never XSRF-checks, so even a page answers 405, not 403
        response = await api.call("OPTIONS", example_url(path, next(iter(item.values()))))
        assert response.code == 405, path
        if is_json_api(item):
            assert set(response.headers["Allow"].split(", ")) == listed, path
            validator.validate(json_of(response))


async def test_unknown_api_path_answers_the_documented_404(api):
    document = json_of(await api.get("/api/openapi.json"))
    response = await api.get("/api/surely/not/a/route")
    assert response.code == 404
    not_found = document["components"]["responses"]["NotFound"]
    validator = body_validator(document, not_found["content"]["application/json"]["schema"])
    validator.validate(json_of(response))


# --- the generator's guard: undocumented routes cannot slip in ---

class _Undocumented(ApiHandler):
    async def get(self):
        self.write_json({})


class _PartlyDocumented(ApiHandler):
    @openapi.documented("documented", path={"thing": "a thing"},
                        responses={200: schemas.HelloOut})
    async def get(self, thing, number):
        self.write_json({})

    async def delete(self, thing, number):
        self.finish()


class _CatchAll(ApiHandler):
    async def get(self):
        self.write_json({})


class _NoPathArgument(ApiHandler):
    @openapi.documented("documented", path={"name": "a name"}, responses={200: schemas.HelloOut})
    async def get(self):
        self.write_json({})


def test_undocumented_methods_and_routes_are_reported():
    app = tornado.web.Application([
        (r"/api/undocumented", _Undocumented),
        (r"/api/things/([^/]+)/(\d+)", _PartlyDocumented),
        (r"/api(?:/.*)?", _CatchAll),
        (r"/healthz-like", _Undocumented),
        (r"/api/named/([^/]+)", _NoPathArgument),
    ])
    document = openapi.build_openapi(app)
    problems = "\n".join(document[openapi.PROBLEMS_KEY])
    assert "GET /api/undocumented" in problems
    assert "DELETE /api/things/([^/]+)/(\\d+) (test_openapi._PartlyDocumented.delete)" in problems
    assert "group 2 has no parameter name" in problems
    assert "cannot be written as a path template" in problems and "_CatchAll" in problems
    assert "GET /healthz-like" in problems  # an ApiHandler anywhere is API
    assert "GET /api/named/([^/]+) (test_openapi._NoPathArgument.get) cannot take" in problems
    # what is undocumented still appears, flagged, so the document never hides a route
    assert document["paths"]["/api/undocumented"]["get"]["x-undocumented"] is True
    assert "/api/things/{thing}/{param2}" in document["paths"]
    assert openapi.docs_view(document).problems == tuple(document[openapi.PROBLEMS_KEY])


def test_excluded_handlers_say_why():
    from handlers.api import ApiNotFoundHandler
    assert ApiNotFoundHandler.openapi_excluded
    app = tornado.web.Application([(r"/api(?:/.*)?", ApiNotFoundHandler)])
    assert openapi.PROBLEMS_KEY not in openapi.build_openapi(app)


# --- the page ---

async def test_docs_page_renders_every_operation_without_javascript(api):
    document = json_of(await api.get("/api/openapi.json"))
    response = await api.get("/api/docs")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.body.decode()
    assert "<script" not in page  # rendered here: nothing to run in the browser
    assert "/static/css/docs.css" in page
    for path, method, operation in operations(document):
        assert f'id="{operation["operationId"]}"' in page, (method, path)
        assert tornado.escape.xhtml_escape(operation["summary"]) in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    # a field table row: the request model's field, its type and whether it is required
    row = re.search(r'<code class="field-name">urls</code>.*?</tr>', page, re.S).group(0)
    assert "array of any JSON" in row and "required" in row
    assert "undocumented" not in page.lower()


async def test_home_page_links_to_the_docs(api):
    response = await api.get("/")
    assert 'href="/api/docs"' in response.body.decode()


def test_document_states_the_limits_of_the_settings_in_force(live_server_factory):
    server = live_server_factory("--slow-max-ms", "77", "--max-page-size", "33",
                                 "--max-name-length", "21", "--message-max-length", "444",
                                 "--compute-max-n", "5555", "--outbound-max-urls", "6")
    document = get_json(server.url + "/api/openapi.json")
    schemas = document["components"]["schemas"]

    def query(path, method, name):
        return next(p["schema"] for p in document["paths"][path][method]["parameters"]
                    if p["name"] == name)
    assert query("/api/slow", "get", "ms") == {"type": "integer", "minimum": 0, "maximum": 77}
    assert query("/api/messages", "get", "limit")["maximum"] == 33
    assert query("/api/hello/{name}", "get", "name")["maxLength"] == 21
    assert schemas["HelloIn"]["properties"]["name"]["maxLength"] == 21
    assert schemas["MessageIn"]["properties"]["name"]["maxLength"] == 21
    assert schemas["MessageIn"]["properties"]["text"]["maxLength"] == 444
    assert schemas["MessageIn"]["properties"]["text"]["minLength"] == 1
    assert schemas["ComputeIn"]["properties"]["n"] == {"type": "integer", "minimum": 0,
                                                       "maximum": 5555, "title": "N"}
    assert schemas["FetchIn"]["properties"]["urls"]["maxItems"] == 6
    assert query("/api/messages", "get", "before")["maximum"] == MAX_WHOLE_NUMBER
    assert query("/api/messages/{message_id}", "get", "message_id")["maximum"] == MAX_WHOLE_NUMBER
    assert "x-setting" not in json.dumps(document)
    # the stated bounds are the enforced ones: each bound is taken, one past it is refused
    for url in ("/api/slow?ms=77", "/api/messages?limit=33", "/api/hello/" + "a" * 21,
                f"/api/messages?before={MAX_WHOLE_NUMBER}"):
        with urllib.request.urlopen(server.url + url, timeout=10) as response:
            assert response.status == 200, url
    for url in ("/api/slow?ms=78", "/api/messages?limit=34", "/api/hello/" + "a" * 22,
                f"/api/messages?before={MAX_WHOLE_NUMBER + 1}"):
        try:
            urllib.request.urlopen(server.url + url, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 422, url
        else:
            raise AssertionError(f"{url} was accepted")

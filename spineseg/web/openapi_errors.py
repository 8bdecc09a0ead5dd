"""The OpenAPI document says what errors really look like.

Every error answer of the API has one shape, ``{"detail": str, "field": str|null, "source":
str|null}`` (``spineseg.web.errors``), including a request that fails validation (FastAPI's
default would be a list under ``detail``). This rewrites the generated document so each
operation lists the error statuses it can answer with that schema: 400, 401, 403, 422, 503 for
all; 404 where the path or an ``ids``/``*_id`` query names something; 409 where a change is
made to the object the path names; 413 and 415 where a body is sent. Found by running
schemathesis against the document (``tests/web/test_api_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, naming the value"},
        "field": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "the form field, if one"},
        "source": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "the file or parameter"},
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
COMMON = {
    "400": "a request the API cannot act on (said in `detail`)",
    "401": "no valid login or token",
    "403": "the role may not do this, or the CSRF token is missing",
    "422": "a value that is not valid, named in `detail`",
    "503": "the database is busy or the service cannot serve now: retry after `Retry-After`",
}
WITH_PATH = {"404": "no such object (named in `detail`)"}
CHANGES_ONE = {"409": "the object's state forbids this now (said in `detail`), e.g. a job still running"}
WITH_BODY = {"413": "the body is over a size limit", "415": "the body is not of the documented media type"}
METHODS = ("get", "put", "post", "delete", "patch")


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _names_an_object(parameter: dict[str, Any]) -> bool:
    """A query parameter that names stored objects (``ids``, ``study_id``...): they may not exist."""
    name = str(parameter.get("name", ""))
    return parameter.get("in") == "query" and (name.endswith("_id") or name in ("id", "ids"))


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the real error schema and error statuses on every operation."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            wanted = dict(COMMON)
            if "{" in path or any(_names_an_object(p) for p in operation.get("parameters", [])):
                wanted |= WITH_PATH
            if "requestBody" in operation:
                wanted |= WITH_BODY
            if method != "get" and "{" in path:
                wanted |= CHANGES_ONE
            for status, description in wanted.items():
                if status not in responses:
                    responses[status] = _error_response(description)
            for status, existing in responses.items():  # a route's own error statuses (408, 507...) too
                if str(status)[:1] in ("4", "5"):
                    existing.setdefault("content", {})["application/json"] = {"schema": ERROR_REF}
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with ``document_errors`` applied (cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

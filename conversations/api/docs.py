"""The API's description: the OpenAPI schema as JSON, and a page for people rendered from it.

The page is our own template (no documentation viewer from a CDN: the app runs offline), and
every text it shows from the schema goes through autoescaping or the Markdown sanitiser.
"""

import json
import shlex

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from conversations.api.schema import schema
from conversations.errors import ErrorCode, api_error

METHODS = ["get", "post", "patch", "put", "delete"]
SAMPLE_ID = "0b5c2c1e-7a4d-4f53-9c36-2f1d8e6a9b10"


def openapi(request: HttpRequest) -> JsonResponse:
    """The schema; JSON at every status, as everything under /api/."""
    if request.method not in ("GET", "HEAD"):
        refusal = api_error(
            405, ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here."
        )
        refusal["Allow"] = "GET, HEAD"
        return refusal
    return JsonResponse(schema(), json_dumps_params={"indent": 2})


def curl_example(base_url: str, path: str, method: str, operation: dict) -> str:
    """A command a reader can paste into a shell, with their token in $CHATSITE_TOKEN."""
    url = base_url + path.replace("{conversation_id}", SAMPLE_ID)
    streams = operation.get("x-streams", False)
    command = ["curl"]
    if streams:
        command.append("-N")  # print each event as it arrives
    if method != "get":
        command += ["-X", method.upper()]
    command.append(shlex.quote(url))
    if operation.get("security") != []:
        command += ["-H", '"Authorization: Bearer $CHATSITE_TOKEN"']
    if streams:
        command += ["-H", shlex.quote("Accept: text/event-stream")]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "example" in body:
        command += ["-H", shlex.quote("Content-Type: application/json")]
        command += ["-d", shlex.quote(json.dumps(body["example"]))]
    return " ".join(command)


def _operations(described: dict, base_url: str) -> list[dict]:
    operations = []
    for path, item in described["paths"].items():
        shared_parameters = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            operations.append(
                {
                    "anchor": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": shared_parameters + operation.get("parameters", []),
                    "responses": sorted(operation["responses"].items()),
                    "curl": curl_example(base_url, path, method, operation),
                }
            )
    return operations


@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    described = schema()
    base_url = request.build_absolute_uri("/").rstrip("/")
    context = {
        "info": described["info"],
        "operations": _operations(described, base_url),
        "base_url": base_url,
    }
    return render(request, "conversations/api_docs.html", context)

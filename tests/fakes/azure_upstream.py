"""A fake Azure OpenAI resource on a real loopback socket, for tests of the Azure adapter.

    async with open_fake_azure(deployments={"gpt-4o-mini-prod": "gpt-4o-mini"}) as fake:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=fake.base_url, api_key=fake.api_key, api_version="2024-10-21"
        )
        fake.script(Respond(400, content_filter_error()))
        ...

``base_url`` is the resource endpoint (``http://127.0.0.1:<port>``); ``deployments`` maps a
deployment name to the model it serves. Both URL styles are served:

- ``POST /openai/deployments/{deployment}/{chat/completions,completions,embeddings}`` and
  ``GET /openai/models`` need ``?api-version=`` (any value); without it Azure answers 404
  ``{"error": {"code": "404", "message": "Resource not found"}}``. Key auth is ``api-key`` only:
  a key sent as ``Authorization: Bearer`` counts as missing (Azure reads a bearer as an Entra
  token).
- ``POST /openai/v1/...`` and ``GET /openai/v1/models``: ``api-version`` optional; the body's
  ``model`` names the deployment; the key is accepted in ``api-key`` or as a bearer, as the v1
  API does with the ``openai.OpenAI`` client.

Rejections, in Azure's shape (``{"error": {"code", "message"}}``, no ``type``): a missing key or a
wrong one -> 401, an unknown deployment -> 404 ``DeploymentNotFound``, any other path -> 404.
Bodies come from `tests.fakes.openai_bodies` (ids, echo replies, usage numbers and the OpenAI
request checks apply; ``model`` in replies is the deployment's model), then dressed as Azure does:
replies carry ``prompt_filter_results`` and per-choice ``content_filter_results``; a stream
starts with a chunk with ``"choices": []``, empty ``id``/``model``/``object``, ``created: 0``
and the ``prompt_filter_results``. Scripted answers (`Respond`) are consumed, FIFO, by the next
request that passes routing and auth; `content_filter_error` is Azure's prompt-filter 400.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import msgspec
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from tests.fakes import openai_bodies as bodies
from tests.fakes import server
from tests.fakes.openai_bodies import JsonReply, Reply, SseReply
from tests.fakes.server import RecordedRequest, Respond

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_DEPLOYMENTS",
    "FakeAzure",
    "RecordedRequest",
    "Respond",
    "azure_error",
    "content_filter_error",
    "content_filter_results",
    "open_fake_azure",
]

DEFAULT_API_KEY = "azure-key-test"
DEFAULT_DEPLOYMENTS: Mapping[str, str] = {"gpt-4o-mini-prod": "gpt-4o-mini"}
FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management"
    " policy. Please modify your prompt and retry. To learn more about our content filtering"
    " policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when"
    " making requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a"
    " valid key for an active subscription and use a correct regional API endpoint for your"
    " resource."
)
NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within"
    " the last 5 minutes, please wait a moment and try again."
)

_CLASSIC = re.compile(
    r"^/openai/deployments/(?P<name>[^/]+)/(?P<op>chat/completions|completions|embeddings)$"
)
_V1 = re.compile(r"^/openai/v1/(?P<op>chat/completions|completions|embeddings)$")
_INNER_KEY = "inner"
_SAFE = {"filtered": False, "severity": "safe"}
_encoder = msgspec.json.Encoder()


class AzureError(Exception):
    """A rejection, answered with Azure's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply = JsonReply(status, _encoder.encode(azure_error(code, message)))


def azure_error(code: str, message: str) -> dict[str, Any]:
    """Azure's own error body: a code and a message, no ``type``."""
    return {"error": {"code": code, "message": message}}


def content_filter_results() -> dict[str, Any]:
    return {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def prompt_filter_results() -> list[dict[str, Any]]:
    results = content_filter_results() | {"jailbreak": {"filtered": False, "detected": False}}
    return [{"prompt_index": 0, "content_filter_results": results}]


def content_filter_error(category: str = "violence") -> dict[str, Any]:
    """The 400 Azure sends when the prompt trips a content filter (``category`` at high)."""
    result = content_filter_results() | {category: {"filtered": True, "severity": "high"}}
    inner = {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": result | {"jailbreak": {"filtered": False, "detected": False}},
    }
    error = {"message": FILTER_MESSAGE, "type": None, "param": "prompt", "code": "content_filter"}
    return {"error": error | {"status": 400, "innererror": inner}}


class FakeAzure(server.FakeServer[Respond]):
    """The ASGI app and what tests observe: ``requests`` (paths without the query).

    ``script(*answers)`` queues `Respond` answers for the next requests that pass routing and
    auth, FIFO; ``unused_script`` (also ``unused_faults``) lists those not consumed yet.
    """

    def __init__(self, api_key: str, deployments: Mapping[str, str]) -> None:
        super().__init__()
        self.api_key = api_key
        self.deployments = dict(deployments)

    @property
    def unused_script(self) -> list[Respond]:
        return self.unused_faults

    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        request, seq = self.record(scope, await server.read_body(receive) or b"")
        try:
            answer = self.answer(request, seq)
        except AzureError as error:
            answer = error.reply
        await _send(send, answer, {"apim-request-id": f"apim-{seq}", "x-ms-region": "Fake Region"})

    def answer(self, request: RecordedRequest, seq: int) -> Reply | Respond:
        """Route, authenticate, then a scripted answer or the normal one (sans-IO)."""
        query = parse_qs(request.query)
        if request.method == "GET" and request.path in ("/openai/models", "/openai/v1/models"):
            self._check(request, query, v1=request.path.startswith("/openai/v1/"))
            return self._scripted_or(request.path, self._models)
        classic, v1 = _CLASSIC.match(request.path), _V1.match(request.path)
        if request.method != "POST" or not (classic or v1):
            raise AzureError(404, "404", "Resource not found")
        self._check(request, query, v1=v1 is not None)
        if classic:
            deployment, op = classic["name"], classic["op"]
        else:
            assert v1 is not None
            deployment, op = _model_of(request.body), v1["op"]
        if deployment not in self.deployments:
            raise AzureError(404, "DeploymentNotFound", NO_DEPLOYMENT)
        return self._scripted_or(request.path, lambda: self._reply(request, op, deployment, seq))

    def _check(self, request: RecordedRequest, query: dict[str, list[str]], *, v1: bool) -> None:
        if not v1 and not query.get("api-version", [""])[0]:
            raise AzureError(404, "404", "Resource not found")
        key = request.headers.get("api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if key is None and v1 and scheme.lower() == "bearer":
            key = token.strip()
        if not key:
            raise AzureError(401, "401", MISSING_KEY)
        if key != self.api_key:
            raise AzureError(401, "401", INVALID_KEY)

    def _scripted_or(self, path: str, normal: Callable[[], Reply]) -> Reply | Respond:
        scripted = self.take_fault(path)
        return normal() if scripted is None else scripted

    def _models(self) -> Reply:
        data = [
            {
                "id": model,
                "object": "model",
                "created_at": bodies.CREATED,
                "status": "succeeded",
                "lifecycle_status": "generally-available",
                "capabilities": {"chat_completion": True, "completion": False, "embeddings": False},
            }
            for model in dict.fromkeys(self.deployments.values())
        ]
        return JsonReply(200, _encoder.encode({"data": data, "object": "list"}))

    def _reply(self, request: RecordedRequest, op: str, deployment: str, seq: int) -> Reply:
        model = self.deployments[deployment]
        inner = RecordedRequest(
            method="POST",
            path=f"/v1/{op}",
            query="",
            headers={"authorization": f"Bearer {_INNER_KEY}"},
            body=_with_model(request.body, model),
        )
        reply = bodies.reply(inner, api_key=_INNER_KEY, models={model}, seq=seq)
        if op == "embeddings" or (isinstance(reply, JsonReply) and reply.status != 200):
            return reply
        if isinstance(reply, SseReply):
            return _dress_stream(reply)
        completion = msgspec.json.decode(reply.body)
        _dress_choices(completion["choices"])
        completion["prompt_filter_results"] = prompt_filter_results()
        return JsonReply(200, _encoder.encode(completion))


@asynccontextmanager
async def open_fake_azure(
    *, deployments: Mapping[str, str] = DEFAULT_DEPLOYMENTS, api_key: str = DEFAULT_API_KEY
) -> AsyncIterator[FakeAzure]:
    """Serve a `FakeAzure` on 127.0.0.1 (random port) until the block exits."""
    fake = FakeAzure(api_key, deployments)
    async with server.open_loopback_server(fake) as base_url:
        fake.base_url = base_url
        yield fake


# --- dressing OpenAI bodies as Azure's --------------------------------------------------------


def _model_of(body: bytes) -> str:
    try:
        model = msgspec.json.decode(body).get("model")
    except (msgspec.DecodeError, AttributeError):
        return ""
    return model if isinstance(model, str) else ""


def _with_model(body: bytes, model: str) -> bytes:
    """The body with the deployment's model, which Azure's classic style does not require."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    if not isinstance(decoded, dict):
        return body
    return _encoder.encode(decoded | {"model": model})


def _dress_choices(choices: list[dict[str, Any]]) -> None:
    for choice in choices:
        delta = choice.get("delta")
        opening = isinstance(delta, dict) and "role" in delta
        choice["content_filter_results"] = {} if opening else content_filter_results()


def _dress_stream(reply: SseReply) -> SseReply:
    first = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    events = [bodies.sse(first | {"prompt_filter_results": prompt_filter_results()})]
    for event in reply.events:
        if event == bodies.SSE_DONE:
            events.append(event)
            continue
        chunk = msgspec.json.decode(event.removeprefix(b"data: "))
        _dress_choices(chunk["choices"])
        events.append(bodies.sse(chunk))
    return SseReply(tuple(events))


# --- ASGI ---------------------------------------------------------------------------------------


async def _send(send: ASGISendCallable, answer: Reply | Respond, head: Mapping[str, str]) -> None:
    if isinstance(answer, SseReply):
        fields = {**head, "content-type": "text/event-stream; charset=utf-8"}
        await server.send_response(send, 200, fields, answer.events)
        return
    body = answer.raw_body() if isinstance(answer, Respond) else answer.body
    extra = answer.headers if isinstance(answer, Respond) else {}
    fields = {"content-type": "application/json", "content-length": str(len(body))}
    await server.send_response(send, answer.status, {**head, **fields, **extra}, [body])

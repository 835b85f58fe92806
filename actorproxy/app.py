"""The ASGI application: a dispatcher in front of two halves.

``/v1/*``, ``/health`` and ``/ready`` are served by raw ASGI handlers (the hot path and the probes
an orchestrator hits every few seconds); everything else (admin, metrics, the dashboard) goes to a
Quart app, whose errors are rendered in OpenAI's shape as well. Built by ``build_app`` from explicit
dependencies; nothing is global.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, cast

import msgspec
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actorproxy import admin, asgi, dialects, errors, metrics
from actorproxy.actors.provider import ProviderActor
from actorproxy.auth import Principal
from actorproxy.ops import Ops
from actorproxy.proxy import ProxyHandler
from actorproxy.routing import Router

log = logging.getLogger("actorproxy.app")

_encoder = msgspec.json.Encoder()
PROXY_PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


class ModelObject(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelObject]
    object: str = "list"


class Gateway:
    """The root ASGI callable."""

    def __init__(
        self,
        *,
        proxy: ProxyHandler,
        router: Router,
        ops: Ops,
        created: int,
    ) -> None:
        self._proxy = proxy
        self._router = router
        self._auth = ops.auth
        self._actors: Mapping[str, ProviderActor] = ops.actors
        self._logger = ops.logger
        self._created = created
        self._metrics = metrics.registry(ops.actors, ops.logger, ops.stats)
        quart = _admin_app()
        admin.register(quart, ops)
        self.admin: asgi.App = cast(asgi.App, quart)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            await self.admin(scope, receive, send)
            return
        path = scope["path"]
        endpoint = PROXY_PATHS.get(path)
        try:
            if endpoint is not None:
                await self._proxy.handle(scope, receive, send, endpoint)  # type: ignore[arg-type]
            else:
                await self._route(scope, receive, send, path)
        except Exception as exc:
            log.exception("unhandled error", extra={"path": path})
            await _try_respond_error(send, errors.internal(exc))

    async def _route(
        self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send, path: str
    ) -> None:
        """Everything but the three OpenAI endpoints, which ``__call__`` serves first."""
        if path == "/v1/messages":
            await self._proxy.handle(scope, receive, send, "chat", dialects.MESSAGES)
        elif path == "/v1/messages/count_tokens":
            await self._proxy.count_tokens(scope, receive, send)
        elif (azure := dialects.azure_route(path)) is not None:
            await self._proxy.handle(scope, receive, send, *azure)
        elif path.startswith("/v1/"):
            await self._v1_other(scope, send, path)
        elif path == "/health":
            await asgi.respond(send, 200, b'{"status":"ok"}', [])
        elif path == "/ready":
            await self._ready(send)
        elif path == "/metrics":
            body = metrics.render(self._metrics)
            await asgi.respond(send, 200, body, [], metrics.CONTENT_TYPE)
        else:
            await self.admin(scope, receive, send)

    async def _v1_other(self, scope: asgi.Scope, send: asgi.Send, path: str) -> None:
        request_id = [(b"x-request-id", asgi.request_id(scope).encode())]
        try:
            principal = self._auth.authenticate(scope["headers"])
            if scope["method"] != "GET":
                raise errors.MethodNotAllowed(f"Use GET for {path}.")
            if path == "/v1/models":
                body = _encoder.encode(ModelList(await self._models(principal)))
            elif path.startswith("/v1/models/"):
                model_id = path.removeprefix("/v1/models/")
                body = _encoder.encode(await self._model(principal, model_id))
            else:
                raise errors.NotFound(f"Unknown request URL: {scope['method']} {path}.")
        except errors.ProxyError as exc:
            await asgi.respond_error(send, exc, request_id)
        else:
            await asgi.respond(send, 200, body, request_id)

    async def _models(self, principal: Principal) -> list[ModelObject]:
        """Configured aliases, then ``provider/model`` for providers with ``list_models``."""
        allowed = principal.models
        listed = [
            ModelObject(route.alias, self._created, "actorproxy")
            for route in self._router.aliases()
            if allowed is None or route.alias in allowed
        ]
        for name, actor in self._actors.items():
            if not (actor.config.list_models and actor.config.direct):
                continue
            for upstream_model in await actor.upstream_models():
                model_id = f"{name}/{upstream_model}"
                if allowed is None or model_id in allowed:
                    listed.append(ModelObject(model_id, self._created, name))
        return listed

    async def _model(self, principal: Principal, model_id: str) -> ModelObject:
        for model in await self._models(principal):
            if model.id == model_id:
                return model
        raise errors.ModelNotFound(f"The model `{model_id}` does not exist.", param="model")

    async def _ready(self, send: asgi.Send) -> None:
        actors: dict[str, Any] = {name: asdict(a.statistics()) for name, a in self._actors.items()}
        actors["logger"] = asdict(self._logger.statistics())
        ready = all(stats["state"] == "running" for stats in actors.values())
        body = _encoder.encode({"ready": ready, "actors": actors})
        await asgi.respond(send, 200 if ready else 503, body, [])


async def _try_respond_error(send: asgi.Send, error: errors.ProxyError) -> None:
    try:
        await asgi.respond_error(send, error, [])
    except Exception:  # noqa: BLE001 - the response had started; nothing more can be said
        log.debug("could not send the error response")


def _admin_app() -> QuartTrio:
    app = QuartTrio("actorproxy")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[bytes, int, dict[str, str]]:
        status = exc.code or 500
        error = _http_error(status, exc.description or "")
        return errors.render(error), status, {"content-type": "application/json"}

    return app


def _http_error(status: int, description: str) -> errors.ProxyError:
    kinds: dict[int, type[errors.ProxyError]] = {
        404: errors.NotFound,
        405: errors.MethodNotAllowed,
        413: errors.BodyTooLarge,
    }
    kind = kinds.get(status, errors.InvalidRequest if status < 500 else errors.ProxyError)
    error = kind(description or "The request could not be served.")
    error.status = status
    return error


__all__ = ["Gateway", "Principal"]

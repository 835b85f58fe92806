"""The admin API under ``/admin`` and the live dashboard: master key only, OpenAI-shaped errors.

    GET    /admin/actors            every provider actor's statistics() with its request totals
    GET    /admin/requests          the last requests (no bodies, no keys)
    GET    /admin/keys              the keys in the keys file (never secrets or hashes)
    POST   /admin/keys              create a key {"name", limits...}; answers its secret once
    PATCH  /admin/keys/{id}         change a key's limits: the fields given replace the stored ones
    DELETE /admin/keys/{id}         revoke a key
    POST   /admin/reload            read the config file again and apply it (see reload.py)
    GET    /admin/ui                the dashboard (one HTML page; it asks for the key itself)
    WS     /admin/ws                the dashboard's feed: send {"key": ...}, then receive snapshots

Key changes are written to the keys file (atomically, in a worker thread) and the authenticator
re-reads it before the answer goes out, so a created key works and a revoked key fails at once.
With no keys configured at all (open, loopback only) the admin API is open as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from typing import Any, TypeVar, cast

import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from actorproxy import errors
from actorproxy.config import ConfigError
from actorproxy.keys import KeyRecord, KeysFileError, KeyStore, LimitArgs, Limits, Name, UnknownKey
from actorproxy.ops import Ops, snapshot

FEED_INTERVAL_S = 0.5
HELLO_TIMEOUT_S = 10.0  # a feed client that never says who it is is dropped
_encoder = msgspec.json.Encoder()
JSON = {"content-type": "application/json"}
T = TypeVar("T")


class KeyCreate(Limits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name


class _Hello(msgspec.Struct):
    key: str


_create = msgspec.json.Decoder(KeyCreate)
_patch = msgspec.json.Decoder(dict[str, Any])
_hello = msgspec.json.Decoder(_Hello)


def register(app: QuartTrio, ops: Ops) -> None:
    """Add the admin routes, the dashboard and its feed to ``app``."""
    page = resources.files("actorproxy").joinpath("dashboard.html").read_bytes()

    @app.errorhandler(errors.ProxyError)
    async def proxy_error(exc: errors.ProxyError) -> tuple[bytes, int, dict[str, str]]:
        return errors.render(exc), exc.status, JSON

    @app.get("/admin/actors")
    async def actors() -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        return _json(snapshot(ops, recent=False))

    @app.get("/admin/requests")
    async def requests() -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        return _json({"data": snapshot(ops)["recent"]})

    @app.post("/admin/reload")
    async def reload() -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        if ops.reloader is None:
            raise errors.InvalidRequest("This server cannot reload its config.")
        try:
            done = await ops.reloader.reload()
        except ConfigError as exc:
            raise errors.InvalidRequest(f"The config was not reloaded: {exc}") from None
        return _json(asdict(done))

    @app.get("/admin/ui")
    async def ui() -> Response:
        return Response(page, content_type="text/html; charset=utf-8")

    @app.websocket("/admin/ws")
    async def feed() -> None:
        await _feed(ops)

    _register_keys(app, ops)


def _register_keys(app: QuartTrio, ops: Ops) -> None:
    @app.get("/admin/keys")
    async def list_keys() -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        records = await _keys_call(ops, lambda store: store.load())
        return _json({"data": [_shown(record) for record in records]})

    @app.post("/admin/keys")
    async def create_key() -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        asked = errors.decode_json(_create, await _body())
        limits = cast(LimitArgs, msgspec.structs.asdict(asked.limits()))
        record, secret = await _keys_call(ops, lambda store: store.create(asked.name, **limits))
        return _json({**_shown(record), "secret": secret}, 201)

    @app.patch("/admin/keys/<key_id>")
    async def update_key(key_id: str) -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        fields = errors.decode_json(_patch, await _body())
        unknown = set(fields) - set(Limits.__struct_fields__)
        if unknown:
            raise errors.InvalidRequest(f"Not a limit: {', '.join(sorted(unknown))}.")
        limits = cast(LimitArgs, fields)
        record = await _keys_call(ops, lambda store: store.update(key_id, **limits))
        return _json(_shown(record))

    @app.delete("/admin/keys/<key_id>")
    async def revoke_key(key_id: str) -> tuple[bytes, int, dict[str, str]]:
        _require_admin(ops, _headers())
        record = await _keys_call(ops, lambda store: store.revoke(key_id))
        return _json(_shown(record))


async def _keys_call(ops: Ops, action: Callable[[KeyStore], T]) -> T:
    """Run ``action(store)`` in a worker thread, then make the authenticator see the change.

    One at a time: each action reads the file and writes it back whole.
    """
    store = ops.keys()
    if store is None:
        raise errors.InvalidRequest("The proxy has no keys file (auth.keys_file) to manage.")

    def run() -> T:
        try:
            result = action(store)
        except UnknownKey as exc:
            raise errors.NotFound(str(exc).rpartition(": ")[2].capitalize() + ".") from None
        except KeysFileError as exc:
            raise errors.ProxyError(f"The keys file could not be used: {exc}") from None
        except (ValueError, msgspec.ValidationError) as exc:
            raise errors.InvalidRequest(str(exc)) from None
        ops.auth.reload()
        return result

    async with ops.keys_lock:
        return await trio.to_thread.run_sync(run)


async def _feed(ops: Ops) -> None:
    """Authenticate the first message, then send a snapshot every ``FEED_INTERVAL_S``."""
    try:
        with trio.fail_after(HELLO_TIMEOUT_S):
            hello = _hello.decode(await websocket.receive())
        _require_admin(ops, [(b"authorization", b"Bearer " + hello.key.encode())])
    except trio.TooSlowError:
        await websocket.close(1008)
        return
    except (msgspec.DecodeError, errors.ProxyError) as exc:
        error = exc if isinstance(exc, errors.ProxyError) else errors.InvalidRequest(str(exc))
        await websocket.send(errors.render(error).decode())
        await websocket.close(1008)
        return
    while True:
        await websocket.send(_encoder.encode(snapshot(ops)).decode())
        await trio.sleep(FEED_INTERVAL_S)


def _require_admin(ops: Ops, headers: list[tuple[bytes, bytes]]) -> None:
    if ops.auth.is_open:
        return
    if not ops.auth.authenticate(headers).is_master:
        raise errors.PermissionDenied("The admin API needs the master key.", code="admin_only")


async def _body() -> bytes:
    data = await request.get_data()
    return data if isinstance(data, bytes) else data.encode()


def _headers() -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in request.headers.items()]


def _shown(record: KeyRecord) -> dict[str, Any]:
    fields = msgspec.to_builtins(record)
    assert isinstance(fields, dict)
    del fields["hash"]
    return fields


def _json(body: object, status: int = 200) -> tuple[bytes, int, dict[str, str]]:
    return _encoder.encode(body), status, JSON


__all__ = ["register"]

"""Who is calling: the API key of each request, checked against the master key and the keys file.

`Authenticator.authenticate` runs once per request, so it does no file I/O of its own: the keys file
is indexed by SHA-256 in memory, and the file is re-statted at most once per `RECHECK_S` seconds,
and re-read only when it changed, so keys created or revoked by ``actorproxy keys`` while the
server runs take effect within that interval. Keys never reach a log or an error message whole.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import msgspec

from actorproxy.config import AuthConfig, ConfigError
from actorproxy.errors import AuthenticationFailed
from actorproxy.keys import KeyRecord, KeysFileError, Limits, read_keys_file, resolve_keys_file

log = logging.getLogger("actorproxy.auth")

RECHECK_S = 1.0

_KEY_HEADERS = (b"api-key", b"x-api-key")
_MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or in an api-key or x-api-key header."
)
_SHOWN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Principal(Limits, frozen=True, kw_only=True):
    """The caller of one request: which key, and (inherited from `Limits`) what it may do."""

    key_id: str
    name: str
    is_master: bool = False


MASTER = Principal(key_id="master", name="master", is_master=True)
ANONYMOUS = Principal(key_id="anonymous", name="anonymous")


class _Entry(NamedTuple):
    digest: bytes
    principal: Principal
    revoked: bool


class _Signature(NamedTuple):
    inode: int
    mtime_ns: int
    size: int


class Authenticator:
    """Checks the key each request presents.

    With neither a master key nor a keys file it is *open* and lets everyone in as `ANONYMOUS`;
    the runtime allows that only on a loopback address. ``now`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        *,
        master_key: str | None = None,
        keys_file: Path | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if master_key is not None and not master_key:
            raise ValueError("the master key must not be empty")
        self._master = None if master_key is None else master_key.encode()
        self._keys_file = keys_file
        self._now = now
        self._entries: dict[bytes, _Entry] = {}
        self._signature: _Signature | None = None
        self._checked_at = now()
        if keys_file is not None:
            self._load(keys_file, _stat(keys_file), strict=True)

    @classmethod
    def open(cls) -> Authenticator:
        """An authenticator that accepts every request as `ANONYMOUS`."""
        return cls()

    @classmethod
    def from_config(
        cls,
        auth: AuthConfig,
        environ: Mapping[str, str],
        base_dir: Path,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> Authenticator:
        """Build from ``[auth]``; ``base_dir`` is the config file's directory.

        Raises `ConfigError` when the master key's variable is unset or empty, and when the keys
        file cannot be read or decoded (a missing keys file holds no keys).
        """
        keys_file = None
        if auth.keys_file is not None:
            keys_file = resolve_keys_file(auth.keys_file, base_dir)
        return cls(master_key=_master_key(auth, environ), keys_file=keys_file, now=now)

    @property
    def is_open(self) -> bool:
        return self._master is None and self._keys_file is None

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal:
        """The principal behind ``headers`` (ASGI style, lowercased names), or
        `AuthenticationFailed`."""
        if self.is_open:
            return ANONYMOUS
        key = _presented_key(headers)
        if key is None:
            raise AuthenticationFailed(_MISSING)
        if self._master is not None and hmac.compare_digest(key, self._master):
            return MASTER
        if self._keys_file is not None:
            self._refresh(self._keys_file)
            digest = hashlib.sha256(key).digest()
            entry = self._entries.get(digest)
            if entry is not None and hmac.compare_digest(entry.digest, digest):
                if entry.revoked:
                    raise AuthenticationFailed(f"The API key {mask(key)} has been revoked.")
                return entry.principal
        raise AuthenticationFailed(f"Incorrect API key provided: {mask(key)}.")

    @property
    def keys_file(self) -> Path | None:
        return self._keys_file

    def reload(self) -> None:
        """Re-read the keys file now (the admin API calls it after each write)."""
        if self._keys_file is not None:
            self._checked_at = self._now()
            self._load(self._keys_file, _stat(self._keys_file), strict=False)

    def _refresh(self, path: Path) -> None:
        now = self._now()
        if now - self._checked_at < RECHECK_S:
            return
        self._checked_at = now
        signature = _stat(path)
        if signature != self._signature:
            self._load(path, signature, strict=False)

    def _load(self, path: Path, signature: _Signature | None, *, strict: bool) -> None:
        # The signature is taken before the read: a write racing the read shows up as a change
        # at the next check, never as a missed one.
        self._signature = signature
        try:
            records = read_keys_file(path)
        except KeysFileError as exc:
            if strict:
                raise
            log.error("%s; still using the %d keys read before", exc, len(self._entries))
            return
        self._entries = {entry.digest: entry for entry in map(_entry, records)}
        log.info("loaded %d keys from %s", len(records), path)


def mask(key: bytes) -> str:
    """A key as error messages may show it: ``sk-ap-ab***yz``, or ``***`` when it is short."""
    if len(key) < 20:
        return "***"
    return f"{_shown(key[:8])}***{_shown(key[-2:])}"


def _shown(part: bytes) -> str:
    return "".join(chr(byte) if byte in _SHOWN else "?" for byte in part)


def _presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            parts = value.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == b"bearer":
                return parts[1].strip()
        elif name in _KEY_HEADERS and value.strip():
            return value.strip()
    return None


def _master_key(auth: AuthConfig, environ: Mapping[str, str]) -> str | None:
    name = auth.master_key_env
    if name is None:
        return None
    value = environ.get(name)
    if value is None:
        raise ConfigError(f"auth.master_key_env: the environment variable {name} is not set")
    if not value.strip():
        raise ConfigError(f"auth.master_key_env: the environment variable {name} is empty")
    return value.strip()


def _entry(record: KeyRecord) -> _Entry:
    limits = msgspec.structs.asdict(record.limits())
    principal = Principal(key_id=record.id, name=record.name, **limits)
    return _Entry(bytes.fromhex(record.hash), principal, record.revoked_at is not None)


def _stat(path: Path) -> _Signature | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _Signature(stat.st_ino, stat.st_mtime_ns, stat.st_size)

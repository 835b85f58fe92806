"""API keys: the keys file and the ``actorproxy keys`` command.

The keys file is one JSON document, ``{"version": 1, "keys": [...]}``, decoded strictly into msgspec
Structs: a wrong type or an unknown field is an error naming the file. A key's secret is shown once,
when it is created; the file keeps only its SHA-256 hash and a short id, so a leaked file leaks no
key. Every write goes to a temporary file in the same directory, is fsynced and then renamed over
the old file, so a running server re-reading the file sees the old or the new version, never half.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypedDict, Unpack

import msgspec

from actorproxy import config as config_mod
from actorproxy.config import ConfigError

SECRET_PREFIX = "sk-ap-"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
HexDigest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
UTCTime = Annotated[datetime, msgspec.Meta(tz=True)]


class KeysFileError(ConfigError):
    """The keys file cannot be read, decoded or written; the message names the file."""


class UnknownKey(LookupError):
    """No key in the file has the given id."""


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a key may do. ``None`` means no limit; ``models=None`` allows every model."""

    models: tuple[str, ...] | None = None
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    budget_usd: Annotated[float, msgspec.Meta(ge=0)] | None = None
    budget_period: Literal["day", "month"] | None = None
    log_bodies: bool = True

    def __post_init__(self) -> None:
        if (self.budget_usd is None) != (self.budget_period is None):
            raise ValueError("budget_usd and budget_period go together")

    def limits(self) -> Limits:
        """Just the limits, without the fields a subclass adds."""
        return Limits(**{field: getattr(self, field) for field in Limits.__struct_fields__})


class LimitArgs(TypedDict, total=False):
    """The keyword arguments of `KeyStore.create`: the fields of `Limits`."""

    models: tuple[str, ...] | list[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    budget_usd: float | None
    budget_period: Literal["day", "month"] | None
    log_bodies: bool


class KeyRecord(Limits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One key as stored: never the secret, only its hash."""

    id: Name
    name: Name
    hash: HexDigest
    created_at: UTCTime
    revoked_at: UTCTime | None = None


class _KeysFile(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1] = 1
    keys: list[KeyRecord] = []


_decoder = msgspec.json.Decoder(_KeysFile)
_encoder = msgspec.json.Encoder()


def hash_secret(secret: bytes) -> str:
    """The hex SHA-256 that the keys file stores for ``secret``."""
    return hashlib.sha256(secret).hexdigest()


def resolve_keys_file(keys_file: str, base_dir: Path) -> Path:
    """``auth.keys_file`` as a path; a relative path is relative to the config file's directory."""
    path = Path(keys_file).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_keys_file(path: Path) -> list[KeyRecord]:
    """The records in ``path``; a missing file holds no keys."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read keys file ({exc.strerror})") from None
    try:
        records = _decoder.decode(raw).keys
    except msgspec.ValidationError as exc:
        raise KeysFileError(f"{path}: invalid keys file: {exc}") from None
    except msgspec.DecodeError as exc:
        raise KeysFileError(f"{path}: keys file is not valid JSON ({exc})") from None
    for attribute in ("id", "hash"):
        values = [getattr(record, attribute) for record in records]
        if len(set(values)) != len(values):
            raise KeysFileError(f"{path}: invalid keys file: two keys share an {attribute}")
    return records


def write_keys_file(path: Path, records: list[KeyRecord]) -> None:
    """Replace ``path`` atomically with ``records``, readable by its owner only."""
    data = msgspec.json.format(_encoder.encode(_KeysFile(keys=records)), indent=2) + b"\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(path, data)
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot write keys file ({exc.strerror})") from None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class KeyStore:
    """The keys file at ``path``. `create` and `revoke` re-read the file before they write it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._records: list[KeyRecord] = []

    def load(self) -> list[KeyRecord]:
        self._records = read_keys_file(self.path)
        return self.records()

    def records(self) -> list[KeyRecord]:
        return list(self._records)

    def create(self, name: str, **limits: Unpack[LimitArgs]) -> tuple[KeyRecord, str]:
        """Add a key; returns its record and its secret, which is never stored."""
        self.load()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        fields = {
            **limits,
            "id": _new_id({record.id for record in self._records}),
            "name": name,
            "hash": hash_secret(secret.encode()),
            "created_at": _utc_now(),
        }
        record = msgspec.convert(fields, KeyRecord)
        self._save([*self._records, record])
        return record, secret

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked; revoking it again keeps the first revocation time."""
        self.load()
        index = next((i for i, r in enumerate(self._records) if r.id == key_id), None)
        if index is None:
            raise UnknownKey(f"{self.path}: no key with id {key_id!r}")
        record = self._records[index]
        if record.revoked_at is not None:
            return record
        revoked = msgspec.structs.replace(record, revoked_at=_utc_now())
        self._save([*self._records[:index], revoked, *self._records[index + 1 :]])
        return revoked

    def update(self, key_id: str, **limits: Unpack[LimitArgs]) -> KeyRecord:
        """Change a key's limits; the fields given replace the stored ones, the rest stay.

        Raises `UnknownKey`, or ``ValueError`` (a ``msgspec.ValidationError``) for a bad value.
        """
        self.load()
        index = next((i for i, r in enumerate(self._records) if r.id == key_id), None)
        if index is None:
            raise UnknownKey(f"{self.path}: no key with id {key_id!r}")
        fields = {**msgspec.structs.asdict(self._records[index]), **limits}
        record = msgspec.convert(fields, KeyRecord)
        self._save([*self._records[:index], record, *self._records[index + 1 :]])
        return record

    def _save(self, records: list[KeyRecord]) -> None:
        write_keys_file(self.path, records)
        self._records = records


def _new_id(taken: set[str]) -> str:
    while (key_id := f"key_{secrets.token_hex(5)}") in taken:
        pass
    return key_id


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# The ``actorproxy keys`` command.

Command = Callable[[argparse.Namespace], int]

_MANUAL = {
    "keys": """\
Manage the API keys that clients present to the proxy. Keys live in the keys file named by
auth.keys_file in the config (or given with --keys-file). The file stores only a SHA-256 hash of
each key, so a key's secret is printed once, when it is created, and can never be shown again.
A running server notices created and revoked keys within a second; no restart is needed.""",
    "create": """\
Create a key and print its secret. The secret goes to standard output on its own line and the
notes about it to standard error, so KEY=$(actorproxy keys create --name ci ...) captures only the
secret. Store it at once: it cannot be shown again. A limit left out means no limit.""",
    "list": """\
List every key in the keys file: id, name, creation and revocation times (UTC) and limits.
Neither secrets nor hashes are printed.""",
    "revoke": """\
Revoke a key by its id (see 'keys list'). Requests with the key fail within a second, on a
running server too. A revocation cannot be undone; the record stays in the file.""",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command, with its ``create``, ``list`` and ``revoke`` actions."""
    where = argparse.ArgumentParser(add_help=False)
    source = where.add_argument_group("keys file").add_mutually_exclusive_group(required=True)
    source.add_argument("--keys-file", metavar="PATH", help="the keys file to manage")
    source.add_argument("--config", metavar="PATH", help="a config file; use its auth.keys_file")
    keys = subparsers.add_parser(
        "keys", help="create, list, revoke API keys", description=_MANUAL["keys"]
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def action(name: str, summary: str, command: Command) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[where], help=summary, description=_MANUAL[name])
        parser.set_defaults(func=_reporting(command))
        return parser

    _add_limits(action("create", "create a key and print its secret", _create))
    action("list", "list keys (never their secrets)", _list).add_argument(
        "--json", action="store_true", help="print a JSON array instead of a table"
    )
    action("revoke", "revoke a key", _revoke).add_argument(
        "key_id", metavar="KEY_ID", help="the id of the key, e.g. key_0123456789"
    )


def _add_limits(create: argparse.ArgumentParser) -> None:
    create.add_argument("--name", required=True, help="who or what the key is for")
    limits = create.add_argument_group("limits (each defaults to no limit)")
    limits.add_argument("--models", type=_models, metavar="A,B", help="models the key may use")
    limits.add_argument("--rpm", type=_positive, metavar="N", help="requests per minute")
    limits.add_argument("--tpm", type=_positive, metavar="N", help="tokens per minute")
    limits.add_argument("--max-concurrency", type=_positive, metavar="N", help="requests at once")
    limits.add_argument("--budget-usd", type=float, metavar="X", help="spend per budget period")
    limits.add_argument("--budget-period", choices=("day", "month"), help="needs --budget-usd")
    limits.add_argument(
        "--no-log-bodies",
        dest="log_bodies",
        action="store_false",
        help="keep this key's request and response bodies out of the dataset",
    )


def _models(text: str) -> tuple[str, ...]:
    models = tuple(model.strip() for model in text.split(",") if model.strip())
    if not models:
        raise argparse.ArgumentTypeError("needs at least one model name")
    return models


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _reporting(command: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ConfigError, UnknownKey, ValueError) as exc:
            print(f"actorproxy keys: error: {exc}", file=sys.stderr)
            return 1

    return run


def _store(args: argparse.Namespace) -> KeyStore:
    if args.keys_file is not None:
        return KeyStore(args.keys_file)
    config = config_mod.load(args.config)
    if config.auth.keys_file is None:
        raise ConfigError(f"{args.config}: auth.keys_file is not set; use --keys-file")
    return KeyStore(resolve_keys_file(config.auth.keys_file, Path(args.config).parent))


def _create(args: argparse.Namespace) -> int:
    store = _store(args)
    record, secret = store.create(
        args.name,
        models=args.models,
        rpm=args.rpm,
        tpm=args.tpm,
        max_concurrency=args.max_concurrency,
        budget_usd=args.budget_usd,
        budget_period=args.budget_period,
        log_bodies=args.log_bodies,
    )
    print(f"Created key {record.id} ({record.name}) in {store.path}.", file=sys.stderr)
    print("Its secret follows. Store it now: it cannot be shown again.", file=sys.stderr)
    print(secret)
    return 0


def _list(args: argparse.Namespace) -> int:
    records = _store(args).load()
    if args.json:
        shown = [msgspec.structs.asdict(record) for record in records]
        for fields in shown:
            del fields["hash"]
        print(msgspec.json.format(_encoder.encode(shown), indent=2).decode())
        return 0
    rows = [("ID", "NAME", "CREATED", "REVOKED", "LIMITS")]
    rows += [_row(record) for record in records]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    record = _store(args).revoke(args.key_id)
    assert record.revoked_at is not None
    print(f"Key {record.id} ({record.name}) revoked at {_when(record.revoked_at)} UTC.")
    return 0


def _row(record: KeyRecord) -> tuple[str, str, str, str, str]:
    revoked = "-" if record.revoked_at is None else _when(record.revoked_at)
    return record.id, record.name, _when(record.created_at), revoked, _describe(record.limits())


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _describe(limits: Limits) -> str:
    parts = [] if limits.models is None else [f"models={','.join(limits.models)}"]
    for field in ("rpm", "tpm", "max_concurrency"):
        value = getattr(limits, field)
        if value is not None:
            parts.append(f"{field}={value}")
    if limits.budget_usd is not None:
        parts.append(f"budget=${limits.budget_usd:.2f}/{limits.budget_period}")
    if not limits.log_bodies:
        parts.append("no-log-bodies")
    return " ".join(parts) or "-"

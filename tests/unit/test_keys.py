from __future__ import annotations

import argparse
import hashlib
import json
import re
import stat
from pathlib import Path

import msgspec
import pytest

from actorproxy.config import ConfigError
from actorproxy.keys import (
    KeyRecord,
    KeysFileError,
    KeyStore,
    LimitArgs,
    Limits,
    UnknownKey,
    register,
)


def test_create_list_revoke_round_trip(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    first, _ = store.create("alice")
    second, _ = store.create("bob")
    assert [r.name for r in KeyStore(store.path).load()] == ["alice", "bob"]

    revoked = store.revoke(first.id)

    assert revoked.revoked_at is not None
    assert KeyStore(store.path).load() == [revoked, second]
    assert store.records() == [revoked, second]


def test_key_format_and_stored_hash(tmp_path: Path) -> None:
    record, secret = KeyStore(tmp_path / "keys.json").create("ci")
    assert re.fullmatch(r"sk-ap-[A-Za-z0-9_-]{43}", secret)
    assert re.fullmatch(r"key_[0-9a-f]{10}", record.id)
    assert record.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert record.created_at.utcoffset() is not None
    assert not record.created_at.utcoffset()


def test_ids_are_unique(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    ids = {store.create(f"k{i}")[0].id for i in range(20)}
    assert len(ids) == 20


def test_limits_round_trip(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create(
        "limited",
        models=["gpt-4o", "mock"],
        rpm=60,
        tpm=10_000,
        max_concurrency=4,
        budget_usd=12.5,
        budget_period="month",
        log_bodies=False,
    )
    (loaded,) = KeyStore(store.path).load()
    assert loaded == record
    assert loaded.limits() == Limits(
        models=("gpt-4o", "mock"),
        rpm=60,
        tpm=10_000,
        max_concurrency=4,
        budget_usd=12.5,
        budget_period="month",
        log_bodies=False,
    )


def test_defaults_mean_no_limits(tmp_path: Path) -> None:
    record, _ = KeyStore(tmp_path / "keys.json").create("open")
    assert record.limits() == Limits()
    assert record.limits().models is None
    assert record.log_bodies is True


def test_limit_args_name_every_limit() -> None:
    assert set(LimitArgs.__annotations__) == set(Limits.__struct_fields__)


def test_file_is_private_and_written_atomically(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create("a")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.revoke(record.id)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_missing_directory_is_created(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "state" / "keys.json")
    store.create("a")
    assert len(store.load()) == 1


def test_secret_never_in_file(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    _, secret = store.create("a")
    raw = store.path.read_bytes()
    assert secret.encode() not in raw
    assert secret.removeprefix("sk-ap-").encode() not in raw


def test_file_layout(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create("a", rpm=5)
    document = json.loads(store.path.read_bytes())
    assert document["version"] == 1
    (entry,) = document["keys"]
    assert entry["id"] == record.id
    assert entry["rpm"] == 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["created_at"])
    assert entry["revoked_at"] is None


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "absent.json")
    assert store.load() == []
    assert store.records() == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 1, "keys": [{"id": "k"}]}',
        b'{"version": 2, "keys": []}',
        b'{"version": 1, "keys": [], "extra": true}',
    ],
)
def test_corrupt_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(KeysFileError, match=re.escape(str(path))):
        KeyStore(path).load()


def test_decoding_is_strict_about_types(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create("a", rpm=5)
    store.path.write_bytes(store.path.read_bytes().replace(b'"rpm": 5', b'"rpm": "5"'))
    with pytest.raises(KeysFileError, match=r"\$\.keys\[0\]\.rpm"):
        store.load()


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create("a")
    document = json.loads(store.path.read_bytes())
    twin = dict(document["keys"][0], hash="0" * 64)
    document["keys"].append(twin)
    store.path.write_text(json.dumps(document))
    with pytest.raises(KeysFileError, match="share an id"):
        store.load()


def test_keys_file_error_is_a_config_error() -> None:
    assert issubclass(KeysFileError, ConfigError)


def test_revoke_unknown_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create("a")
    with pytest.raises(UnknownKey, match="key_nope"):
        store.revoke("key_nope")


def test_revoking_twice_keeps_the_first_time(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create("a")
    first = store.revoke(record.id)
    assert store.revoke(record.id) == first


@pytest.mark.parametrize(
    "limits",
    [
        {"rpm": 0},
        {"tpm": -1},
        {"budget_usd": 5.0},
        {"budget_period": "day"},
        {"budget_usd": -1.0, "budget_period": "day"},
    ],
)
def test_invalid_limits_are_rejected(tmp_path: Path, limits: LimitArgs) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(ValueError):
        store.create("a", **limits)
    assert not store.path.exists()


def test_empty_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        KeyStore(tmp_path / "keys.json").create("")


def test_record_decodes_with_struct_strictness() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"id": "k", "name": "n", "hash": "xyz"}', type=KeyRecord)


# The CLI.


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.parser = argparse.ArgumentParser(prog="actorproxy")
        register(self.parser.add_subparsers(dest="command"))
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        args = self.parser.parse_args(argv)
        code = args.func(args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def test_cli_create_prints_the_secret_once(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, out, err = cli("keys", "create", "--name", "ci", "--keys-file", str(path))
    assert code == 0
    secret = out.strip()
    assert re.fullmatch(r"sk-ap-[A-Za-z0-9_-]{43}", secret)
    assert "cannot be shown again" in err
    (record,) = KeyStore(path).load()
    assert record.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert record.id in err


def test_cli_create_with_limits(cli: Cli, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    argv = ["--models", "a, b", "--rpm", "60", "--tpm", "1000", "--max-concurrency", "2"]
    argv += ["--budget-usd", "3.5", "--budget-period", "day", "--no-log-bodies"]
    code, _, _ = cli("keys", "create", "--name", "x", "--keys-file", path, *argv)
    assert code == 0
    (record,) = KeyStore(path).load()
    assert record.limits() == Limits(
        models=("a", "b"),
        rpm=60,
        tpm=1000,
        max_concurrency=2,
        budget_usd=3.5,
        budget_period="day",
        log_bodies=False,
    )


def test_cli_list_shows_a_table_without_secrets(cli: Cli, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    _, secret, _ = cli("keys", "create", "--name", "alice", "--rpm", "5", "--keys-file", path)
    cli("keys", "create", "--name", "bob", "--no-log-bodies", "--keys-file", path)
    code, out, _ = cli("keys", "list", "--keys-file", path)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "REVOKED", "LIMITS"]
    assert "alice" in rows[0] and "rpm=5" in rows[0]
    assert "bob" in rows[1] and "no-log-bodies" in rows[1]
    for record in KeyStore(path).load():
        assert record.hash not in out
    assert secret.strip() not in out


def test_cli_list_json(cli: Cli, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    cli("keys", "create", "--name", "alice", "--models", "m", "--keys-file", path)
    code, out, _ = cli("keys", "list", "--json", "--keys-file", path)
    assert code == 0
    (entry,) = json.loads(out)
    assert "hash" not in entry
    assert entry["name"] == "alice"
    assert entry["models"] == ["m"]


def test_cli_revoke(cli: Cli, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    cli("keys", "create", "--name", "alice", "--keys-file", path)
    (record,) = KeyStore(path).load()
    code, out, _ = cli("keys", "revoke", record.id, "--keys-file", path)
    assert code == 0
    assert record.id in out and "revoked" in out
    (revoked,) = KeyStore(path).load()
    assert revoked.revoked_at is not None
    _, table, _ = cli("keys", "list", "--keys-file", path)
    assert table.splitlines()[1].split()[3] != "-"


def test_cli_revoke_unknown_key(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("keys", "revoke", "key_nope", "--keys-file", str(tmp_path / "k.json"))
    assert code == 1
    assert out == ""
    assert "key_nope" in err


def test_cli_budget_needs_a_period(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, _, err = cli(
        "keys", "create", "--name", "x", "--budget-usd", "1", "--keys-file", str(path)
    )
    assert code == 1
    assert "budget_period" in err
    assert not path.exists()


def test_cli_reads_the_keys_file_from_the_config(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "actorproxy.toml"
    config.parent.mkdir()
    config.write_text('[auth]\nkeys_file = "keys.json"\n')
    code, _, _ = cli("keys", "create", "--name", "x", "--config", str(config))
    assert code == 0
    assert len(KeyStore(tmp_path / "conf" / "keys.json").load()) == 1


def test_cli_config_without_keys_file(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "actorproxy.toml"
    config.write_text("[auth]\n")
    code, _, err = cli("keys", "list", "--config", str(config))
    assert code == 1
    assert "auth.keys_file" in err


def test_cli_corrupt_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[")
    code, _, err = cli("keys", "list", "--keys-file", str(path))
    assert code == 1
    assert str(path) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "list"],
        ["keys", "list", "--keys-file", "a", "--config", "b"],
        ["keys", "create", "--keys-file", "a"],
        ["keys", "create", "--name", "x", "--rpm", "0", "--keys-file", "a"],
        ["keys", "create", "--name", "x", "--models", ",", "--keys-file", "a"],
        ["keys", "create", "--name", "x", "--budget-period", "week", "--keys-file", "a"],
        ["keys"],
    ],
)
def test_cli_usage_errors(cli: Cli, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parser.parse_args(argv)
    assert exit_info.value.code == 2


def test_cli_help_reads_like_a_manual(cli: Cli) -> None:
    with pytest.raises(SystemExit):
        cli.parser.parse_args(["keys", "create", "--help"])
    out, _ = cli.capsys.readouterr()
    assert "cannot be shown again" in " ".join(out.split())
    assert "--budget-period {day,month}" in out


def test_times_must_carry_a_timezone(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create("a")
    stamp = record.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    store.path.write_bytes(store.path.read_bytes().replace(f"{stamp}Z".encode(), stamp.encode()))
    with pytest.raises(KeysFileError, match="created_at"):
        store.load()


def test_update_replaces_only_the_limits_given(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    record, _ = store.create("ci", rpm=10, models=["a"])
    updated = store.update(record.id, rpm=20)
    assert (updated.rpm, updated.models, updated.hash) == (20, ("a",), record.hash)
    assert KeyStore(store.path).load() == [updated]
    with pytest.raises(msgspec.ValidationError):
        store.update(record.id, rpm=0)
    with pytest.raises(UnknownKey):
        store.update("key_missing", rpm=1)

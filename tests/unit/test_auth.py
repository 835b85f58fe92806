from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.auth import ANONYMOUS, MASTER, RECHECK_S, Authenticator, Principal, mask
from actorproxy.config import AuthConfig, ConfigError
from actorproxy.errors import AuthenticationFailed
from actorproxy.keys import KeysFileError, KeyStore, Limits, register

MASTER_KEY = "sk-master-0123456789abcdef"

Headers = list[tuple[bytes, bytes]]


class Clock:
    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float = RECHECK_S) -> None:
        self.time += seconds


def bearer(key: str) -> Headers:
    return [(b"authorization", b"Bearer " + key.encode())]


def failure(authenticator: Authenticator, headers: Headers) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        authenticator.authenticate(headers)
    assert info.value.status == 401
    assert info.value.code == "invalid_api_key"
    return info.value.message


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


@pytest.fixture
def secret(store: KeyStore) -> str:
    _, secret = store.create("alice", models=["mock"], rpm=10, log_bodies=False)
    return secret


@pytest.fixture
def auth(store: KeyStore, secret: str, clock: Clock) -> Authenticator:
    return Authenticator(master_key=MASTER_KEY, keys_file=store.path, now=clock)


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: [(b"authorization", b"Bearer " + key)],
        lambda key: [(b"authorization", b"bearer  " + key + b" ")],
        lambda key: [(b"authorization", b"BEARER\t" + key)],
        lambda key: [(b"api-key", key)],
        lambda key: [(b"x-api-key", b" " + key)],
        lambda key: [(b"content-type", b"application/json"), (b"x-api-key", key)],
    ],
)
def test_each_header_form(
    auth: Authenticator, store: KeyStore, secret: str, headers: Callable[[bytes], Headers]
) -> None:
    principal = auth.authenticate(headers(secret.encode()))
    (record,) = store.load()
    assert principal == Principal(
        key_id=record.id, name="alice", models=("mock",), rpm=10, log_bodies=False
    )
    assert not principal.is_master
    assert principal.models == ("mock",) and principal.rpm == 10 and principal.tpm is None
    assert principal.limits() == record.limits()


def test_wrong_key(auth: Authenticator, secret: str) -> None:
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    message = failure(auth, bearer(wrong))
    assert message.startswith(f"Incorrect API key provided: {wrong[:8]}***{wrong[-2:]}")
    assert wrong not in message
    assert wrong[8:-2] not in message


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer ")],
        [(b"authorization", b"Basic dXNlcjpwYXNz")],
        [(b"api-key", b"   ")],
        [(b"x-other-key", b"sk-ap-whatever")],
    ],
)
def test_missing_key(auth: Authenticator, headers: Headers) -> None:
    assert failure(auth, headers).startswith("You didn't provide an API key.")


def test_revoked_key(auth: Authenticator, store: KeyStore, secret: str, clock: Clock) -> None:
    (record,) = store.load()
    store.revoke(record.id)
    clock.advance()
    assert "revoked" in failure(auth, bearer(secret))


def test_master_key(auth: Authenticator) -> None:
    assert auth.authenticate(bearer(MASTER_KEY)) == MASTER
    assert MASTER.is_master and MASTER.key_id == "master"
    assert MASTER.limits() == Limits()


def test_master_key_alone(clock: Clock) -> None:
    auth = Authenticator(master_key=MASTER_KEY, now=clock)
    assert not auth.is_open
    assert auth.authenticate([(b"api-key", MASTER_KEY.encode())]) == MASTER
    assert "Incorrect API key" in failure(auth, bearer(MASTER_KEY + "x"))


def test_empty_master_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Authenticator(master_key="")


def test_open_accepts_everything() -> None:
    auth = Authenticator.open()
    assert auth.is_open
    assert auth.authenticate([]) == ANONYMOUS
    assert auth.authenticate(bearer("anything")) == ANONYMOUS
    assert ANONYMOUS.key_id == "anonymous" and not ANONYMOUS.is_master


def test_from_config_open(tmp_path: Path) -> None:
    auth = Authenticator.from_config(AuthConfig(), {}, tmp_path)
    assert auth.is_open


def test_from_config_resolves_keys_file_against_base_dir(tmp_path: Path) -> None:
    _, secret = KeyStore(tmp_path / "keys.json").create("a")
    environ = {"AP_MASTER": f"{MASTER_KEY}\n"}
    config = AuthConfig(master_key_env="AP_MASTER", keys_file="keys.json")
    auth = Authenticator.from_config(config, environ, tmp_path)
    assert not auth.is_open
    assert auth.authenticate(bearer(secret)).name == "a"
    assert auth.authenticate(bearer(MASTER_KEY)) == MASTER


def test_from_config_missing_keys_file_holds_no_keys(tmp_path: Path) -> None:
    auth = Authenticator.from_config(AuthConfig(keys_file="absent.json"), {}, tmp_path)
    assert not auth.is_open
    assert "Incorrect API key" in failure(auth, bearer("sk-ap-" + "x" * 43))


@pytest.mark.parametrize("environ", [{}, {"AP_MASTER": ""}, {"AP_MASTER": "  "}])
def test_from_config_master_key_env_unset(tmp_path: Path, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AP_MASTER"):
        Authenticator.from_config(AuthConfig(master_key_env="AP_MASTER"), environ, tmp_path)


def test_corrupt_file_at_start_is_an_error(store: KeyStore) -> None:
    store.path.write_text("{")
    with pytest.raises(KeysFileError, match=r"keys\.json"):
        Authenticator(keys_file=store.path)


def cli_run(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="actorproxy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_hot_reload_after_cli_create_and_revoke(
    tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "keys.json")
    auth = Authenticator(keys_file=Path(path), now=clock)
    cli_run("keys", "create", "--name", "late", "--keys-file", path)
    secret = capsys.readouterr().out.strip()

    # Within the second since the last stat, the file is not looked at again.
    clock.advance(RECHECK_S / 2)
    failure(auth, bearer(secret))
    clock.advance(RECHECK_S / 2)
    assert auth.authenticate(bearer(secret)).name == "late"

    (record,) = KeyStore(path).load()
    cli_run("keys", "revoke", record.id, "--keys-file", path)
    clock.advance(RECHECK_S / 2)
    assert auth.authenticate(bearer(secret)).name == "late"
    clock.advance(RECHECK_S / 2)
    assert "revoked" in failure(auth, bearer(secret))


def test_deleted_file_drops_its_keys(
    auth: Authenticator, store: KeyStore, secret: str, clock: Clock
) -> None:
    store.path.unlink()
    clock.advance()
    failure(auth, bearer(secret))


def test_corrupt_file_while_running_keeps_the_old_keys(
    auth: Authenticator,
    store: KeyStore,
    secret: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = store.path.read_bytes()
    store.path.write_bytes(b"{broken")
    clock.advance()
    with caplog.at_level(logging.ERROR, logger="actorproxy.auth"):
        assert auth.authenticate(bearer(secret)).name == "alice"
    assert str(store.path) in caplog.text
    assert secret not in caplog.text

    revoked = good.replace(b'"revoked_at": null', b'"revoked_at": "2026-01-01T00:00:00Z"')
    store.path.write_bytes(revoked)
    clock.advance()
    assert "revoked" in failure(auth, bearer(secret))


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (b"sk-ap-abcdefghijklmnopqrstuvwxyz", "sk-ap-ab***yz"),
        (b"short", "***"),
        (b"sk-ap-\xff\x00cdefghijklmnopqrstuv\n", "sk-ap-??***v?"),
    ],
)
def test_mask(key: bytes, shown: str) -> None:
    assert mask(key) == shown


@pytest.fixture(scope="module")
def fuzz_auth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authenticator, str]:
    store = KeyStore(tmp_path_factory.mktemp("fuzz") / "keys.json")
    _, secret = store.create("fuzz")
    return Authenticator(master_key=MASTER_KEY, keys_file=store.path), secret


_names = st.one_of(
    st.sampled_from([b"authorization", b"api-key", b"x-api-key", b"host"]), st.binary(max_size=20)
)
_values = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda tail: b"Bearer " + tail, st.binary(max_size=60)),
    st.builds(lambda tail: b"Bearer sk-ap-" + tail, st.binary(max_size=50)),
)


@given(headers=st.lists(st.tuples(_names, _values), max_size=6))
def test_authenticate_only_raises_authentication_failed(
    fuzz_auth: tuple[Authenticator, str], headers: Headers
) -> None:
    auth, secret = fuzz_auth
    try:
        principal = auth.authenticate(headers)
    except AuthenticationFailed as exc:
        assert secret not in exc.message
        assert MASTER_KEY not in exc.message
    else:
        assert isinstance(principal, Principal)

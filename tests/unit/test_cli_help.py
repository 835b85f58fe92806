"""`actorproxy --help` and `actorproxy serve --help` read like a manual."""

from __future__ import annotations

import pytest

from actorproxy import cli


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_the_top_level_help_lists_commands_examples_and_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys)
    for command in ("serve", "check-config", "keys", "dataset"):
        assert f"\n    {command}" in text
    for words in ("examples:", "ACTORPROXY_CONFIG", "ACTORPROXY_MASTER_KEY", "exit status"):
        assert words in text


def test_serve_help_explains_signals_endpoints_and_logs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys, "serve")
    for words in ("SIGTERM", "SIGHUP", "/admin/reload", "/metrics", "/admin/ui", "stderr"):
        assert words in text
    assert "--port PORT" in text and "--config PATH" in text


def test_check_config_help_names_its_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the TOML config file to check" in _help(capsys, "check-config")

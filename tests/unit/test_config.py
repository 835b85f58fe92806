"""Configuration: the TOML file decoded and checked, errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from actorproxy import config as cfg

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    """The first TOML block of README.md's "Add a real provider", as it is printed there."""
    section = README.read_text().split("### Add a real provider", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


MOCK_PROVIDER = '[[providers]]\nname = "mock"\nkind = "mock"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "actorproxy.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


def test_readme_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, readme_example())
    config = cfg.load(path)
    assert config.source == str(path)
    assert config.server == cfg.ServerConfig(host="127.0.0.1", port=8000)
    assert config.auth == cfg.AuthConfig(
        master_key_env="ACTORPROXY_MASTER_KEY", keys_file="keys.json"
    )
    kinds = {provider.name: provider.kind for provider in config.providers}
    assert kinds == {
        "openai": "openai",
        "claude": "anthropic",
        "azure": "azure",
        "ollama": "ollama",
        "openrouter": "openai",
    }
    openai, claude, azure, ollama, _ = config.providers
    assert (openai.url, openai.api_key_env, openai.stream_usage) == (
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        True,
    )
    assert (claude.url, claude.anthropic.default_max_tokens) == ("https://api.anthropic.com", 8192)
    assert azure.azure.deployments == {"gpt-4o-mini": "gpt-4o-mini-prod"}
    assert (ollama.url, ollama.list_models, ollama.ollama.repair_tool_calls) == (
        "http://127.0.0.1:11434",
        True,
        True,
    )
    assert [model.name for model in config.models] == ["gpt-4o-mini", "claude-sonnet"]


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, ""))
    assert msgspec.structs.replace(config, source=cfg.Config().source) == cfg.Config()


def test_embedded_default_passes_check() -> None:
    cfg.check(cfg.EMBEDDED_DEFAULT)
    assert [p.kind for p in cfg.EMBEDDED_DEFAULT.providers] == ["mock"]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(cfg.ConfigError, match="cannot read config file") as caught:
        cfg.load(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    assert "not valid TOML" in load_error(tmp_path, "[server\nport = 1\n")


@pytest.mark.parametrize(
    ("text", "field", "where"),
    [
        ("[server]\nprot = 8000\n", "prot", "$.server"),
        ("colour = 'blue'\n", "colour", None),  # top level: the field is the whole path
        (MOCK_PROVIDER + "max_concurency = 1\n", "max_concurency", "$.providers[0]"),
        (MOCK_PROVIDER + "[providers.mock]\nlatency = 1\n", "latency", "$.providers[0].mock"),
    ],
)
def test_unknown_key_names_the_key_path(
    tmp_path: Path, text: str, field: str, where: str | None
) -> None:
    message = load_error(tmp_path, text)
    assert f"unknown field `{field}`" in message
    if where is not None:
        assert message.endswith(f" - at `{where}`")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[server]\nport = "8000"\n', "$.server.port"),
        (MOCK_PROVIDER + 'max_concurrency = "many"\n', "$.providers[0].max_concurrency"),
        ('[[providers]]\nname = "x"\nkind = "bedrock"\n', "$.providers[0].kind"),
        ('[[models]]\nname = "m"\ntargets = "mock/mock"\n', "$.models[0].targets"),
        ('providers = "mock"\n', "$.providers"),
    ],
)
def test_wrong_type_names_the_key_path(tmp_path: Path, text: str, where: str) -> None:
    assert f"`{where}`" in load_error(tmp_path, text)


def test_missing_required_key_names_it(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[[providers]]\nkind = "mock"\n')
    assert "`name`" in message
    assert "`$.providers[0]`" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MOCK_PROVIDER + MOCK_PROVIDER, "providers: the name 'mock' is used twice"),
        ('[[providers]]\nname = "a/b"\nkind = "mock"\n', "without '/'"),
        ('[[providers]]\nname = ""\nkind = "mock"\n', "must be non-empty"),
        ('[[providers]]\nname = "o"\nkind = "azure"\n', "providers[0].base_url: required"),
        (
            '[[providers]]\nname = "o"\nkind = "openai"\nbase_url = "api.openai.com"\n',
            "providers[0].base_url: must start with http:// or https://",
        ),
        (MOCK_PROVIDER + "max_concurrency = 0\n", "providers[0].max_concurrency"),
        (MOCK_PROVIDER + "max_queue = -1\n", "providers[0].max_queue"),
        (MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = ["other/x"]\n', "models[0].targets"),
        (MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = ["mock"]\n', "models[0].targets"),
        (MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = ["mock/"]\n', "models[0].targets"),
        (MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = []\n', "at least one target"),
        (
            MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = ["mock/a"]\n'
            '[[models]]\nname = "m"\ntargets = ["mock/b"]\n',
            "models[1].name: 'm' is used twice",
        ),
        ("[server]\nport = 65536\n", "server.port: 65536 is not a TCP port"),
        ("[server]\nport = -1\n", "server.port: -1 is not a TCP port"),
        ('[server]\ntls_cert = "c.pem"\n', "server.tls_cert and server.tls_key go together"),
        ('[server]\ntls_key = "k.pem"\n', "server.tls_cert and server.tls_key go together"),
        ("[server]\nmax_body_bytes = 10\n", "server.max_body_bytes"),
    ],
)
def test_cross_field_checks_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_range_edges_are_accepted(tmp_path: Path, port: int) -> None:
    assert cfg.load(write(tmp_path, f"[server]\nport = {port}\n")).server.port == port


def test_tls_pair_is_accepted(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, '[server]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'))
    assert (config.server.tls_cert, config.server.tls_key) == ("c.pem", "k.pem")


def test_mock_provider_needs_no_base_url(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, MOCK_PROVIDER + '[[models]]\nname="m"\ntargets=["mock/m"]\n'))
    assert config.providers[0].base_url is None


def test_check_names_the_source_of_an_in_memory_config() -> None:
    config = cfg.Config(
        providers=[cfg.ProviderConfig(name="o", kind="azure")], source="from-the-cli"
    )
    with pytest.raises(cfg.ConfigError, match=r"^from-the-cli: providers\[0\]\.base_url"):
        cfg.check(config)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        cfg.EMBEDDED_DEFAULT.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("x", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert cfg.is_loopback(host) is loopback


def test_public_kinds_default_their_base_url(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, '[[providers]]\nname = "o"\nkind = "openai"\n'))
    assert config.providers[0].url == "https://api.openai.com/v1"


def test_a_kind_table_belongs_to_its_kind(tmp_path: Path) -> None:
    text = '[[providers]]\nname = "o"\nkind = "openai"\n[providers.anthropic]\nversion = "x"\n'
    assert "providers[0].anthropic: only for kind 'anthropic'" in load_error(tmp_path, text)


def test_kind_options_decode(tmp_path: Path) -> None:
    text = (
        '[[providers]]\nname = "az"\nkind = "azure"\nbase_url = "https://r.openai.azure.com"\n'
        '[providers.azure]\nstyle = "v1"\ndeployments = { "gpt-4o" = "prod-4o" }\n'
    )
    azure = cfg.load(write(tmp_path, text)).providers[0].azure
    assert (azure.style, azure.deployments, azure.empty_choices) == (
        "v1",
        {"gpt-4o": "prod-4o"},
        "drop",
    )


TWO_TARGETS = MOCK_PROVIDER + '[[models]]\nname = "m"\ntargets = ["mock/a", "mock/b"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TWO_TARGETS + 'strategy = "weighted"\nweights = [1]\n', "1 weights for 2 targets"),
        (TWO_TARGETS + 'strategy = "weighted"\nweights = [1, -1]\n', "must be finite, >= 0"),
        (TWO_TARGETS + 'strategy = "weighted"\nweights = [0, 0]\n', "not all 0"),
        (TWO_TARGETS + "weights = [1, 2]\n", 'models[0].weights: only for strategy = "weighted"'),
        (TWO_TARGETS + 'strategy = "fastest"\n', "`$.models[0].strategy`"),
        (TWO_TARGETS + "max_retries = -1\n", "models[0].max_retries"),
        ("[routing]\nmax_retries = -1\n", "routing.max_retries"),
        ("[routing]\nretry_cap_s = -1\n", "routing.retry_cap_s"),
        ("[routing]\ntotal_timeout_s = 0\n", "routing.total_timeout_s"),
        ('[prices."gpt-4o"]\ninput = -1\noutput = 1\n', "prices.'gpt-4o'"),
        ('[prices."gpt-4o"]\ninput = 1\n', "`output`"),
        ("[key_limits]\nbytes_per_token = 0\n", "key_limits"),
    ],
)
def test_routing_and_price_checks_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_routing_prices_and_weights_decode(tmp_path: Path) -> None:
    text = (
        TWO_TARGETS
        + 'strategy = "weighted"\nweights = [3, 1]\nmax_retries = 2\n'
        + "[routing]\nmax_retries = 1\nretry_base_s = 0.1\n"
        + '[prices."gpt-4o"]\ninput = 2.5\ncached_input = 1.25\noutput = 10\n'
    )
    config = cfg.load(write(tmp_path, text))
    assert config.models[0].weights == [3.0, 1.0] and config.models[0].max_retries == 2
    assert config.routing.max_retries == 1 and config.routing.retry_base_s == 0.1
    assert config.prices["gpt-4o"] == cfg.Price(input=2.5, cached_input=1.25, output=10.0)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("rpm = 0", "rpm"),
        ("tpm = -5", "tpm"),
        ("rate_window_s = 0.0", "rate_window_s"),
        ("max_queue_wait_s = 0.0", "max_queue_wait_s"),
        ("first_byte_timeout_s = -1.0", "first_byte_timeout_s"),
        ("idle_timeout_s = 0.0", "idle_timeout_s"),
        ("breaker_probes = 0", "breaker_probes"),
        ("breaker_min_calls = 0", "breaker_min_calls"),
        ("breaker_failure_rate = 1.5", "breaker_failure_rate"),
        ("default_output_tokens = -1", "default_output_tokens"),
    ],
)
def test_limits_timeouts_and_breaker_settings_are_checked(
    tmp_path: Path, line: str, key: str
) -> None:
    message = load_error(tmp_path, f"{MOCK_PROVIDER}{line}\n")
    assert "providers[0]" in message
    assert key in message


def test_limits_decode(tmp_path: Path) -> None:
    text = f"{MOCK_PROVIDER}rpm = 60\ntpm = 90000\nidle_timeout_s = 20.0\nbreaker_probes = 2\n"
    provider = cfg.load(write(tmp_path, text)).providers[0]
    assert (provider.rpm, provider.tpm, provider.idle_timeout_s) == (60, 90000, 20.0)
    assert (provider.breaker_probes, provider.first_byte_timeout_s) == (2, None)

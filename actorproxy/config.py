"""Configuration: one TOML file decoded into frozen msgspec Structs.

Unknown keys and wrong types stop start-up with a message naming the key and the file. Secrets never
live in the file: a provider names the environment variable that holds its key. The CLI reads the
file once and passes the Struct down; nothing else reads the environment for configuration.
"""

from __future__ import annotations

import ipaddress
import math
import os
from pathlib import Path
from typing import Literal

import msgspec

from actorproxy.redact import RedactionConfig

ProviderKind = Literal["openai", "mock", "anthropic", "azure", "ollama"]
Strategy = Literal["fallback", "weighted", "least_busy", "latency"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class _Base(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ServerConfig(_Base, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    tls_cert: str | None = None
    tls_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    graceful_timeout_s: float = 30.0
    backlog: int = 4096
    keep_alive_timeout_s: float = 75.0
    keep_alive_max_requests: int = 100_000


class AuthConfig(_Base, frozen=True):
    master_key_env: str | None = None
    keys_file: str | None = None


class MockConfig(_Base, frozen=True):
    """Behaviour of a ``kind = "mock"`` provider (deterministic, no network)."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    chunks: int = 0
    embedding_dims: int = 16


class AnthropicConfig(_Base, frozen=True):
    """Options of a ``kind = "anthropic"`` provider (see docs/providers/anthropic.md)."""

    version: str = "2023-06-01"
    default_max_tokens: int = 4096
    unsupported: Literal["drop", "reject"] = "drop"
    beta: list[str] = []


class AzureConfig(_Base, frozen=True):
    """Options of a ``kind = "azure"`` provider (see docs/providers/azure.md)."""

    api_version: str | None = None  # deployments style: 2024-10-21; v1 style: none sent
    style: Literal["deployments", "v1"] = "deployments"
    deployments: dict[str, str] = {}
    empty_choices: Literal["drop", "pass"] = "drop"


class OllamaConfig(_Base, frozen=True):
    """Options of a ``kind = "ollama"`` provider (see docs/providers/ollama.md)."""

    keep_alive: str | None = None
    repair_tool_calls: bool = False


#: Where each kind lives when ``base_url`` is not given.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
}


class ProviderConfig(_Base, frozen=True):
    name: str
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    stream_usage: bool = False
    strip_extensions: bool = True
    list_models: bool = False
    max_concurrency: int = 64
    max_queue: int = 1024
    max_queue_wait_s: float = 30.0
    rpm: int | None = None
    tpm: int | None = None
    rate_window_s: float = 60.0
    default_output_tokens: int = 1024
    max_pause_s: float = 60.0
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    request_timeout_s: float = 600.0
    headers: dict[str, str] = {}
    direct: bool = True
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    breaker_failure_rate: float = 0.5
    breaker_window_s: float = 30.0
    breaker_min_calls: int = 20
    breaker_probes: int = 1
    mock: MockConfig = MockConfig()
    anthropic: AnthropicConfig = AnthropicConfig()
    azure: AzureConfig = AzureConfig()
    ollama: OllamaConfig = OllamaConfig()

    @property
    def url(self) -> str:
        """``base_url``, else the kind's public default (``check`` refuses a kind without one)."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")


class ModelConfig(_Base, frozen=True):
    name: str
    targets: list[str]
    strategy: Strategy = "fallback"
    weights: list[float] | None = None  # one per target, for ``weighted``; absent: equal
    max_retries: int | None = None  # retries per target; absent: ``[routing] max_retries``


class RoutingConfig(_Base, frozen=True):
    """Retries and fall-overs (docs/limits-routing.md): full-jitter backoff, ``Retry-After``."""

    max_retries: int = 0  # retries of the same target; the next target is tried either way
    retry_base_s: float = 0.25
    retry_cap_s: float = 4.0
    retry_max_wait_s: float = 10.0
    total_timeout_s: float = 600.0  # every attempt and wait of one request, until its first byte
    latency_tau_s: float = 10.0


class Price(_Base, frozen=True):
    """USD per million tokens; ``cached_input`` defaults to ``input``."""

    input: float
    output: float
    cached_input: float | None = None


class KeyLimitsConfig(_Base, frozen=True):
    """How a request's prompt tokens are estimated for token reservations (keys and providers).

    The output part is the request's max tokens, else the first target's
    ``default_output_tokens`` (``[[providers]]``)."""

    bytes_per_token: float = 4.0


class LoggingConfig(_Base, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"


class TracingConfig(_Base, frozen=True):
    """OTLP/HTTP span export (docs/observability.md). Needs the ``otel`` extra; with no
    ``otlp_endpoint`` nothing is exported and no OpenTelemetry module is imported."""

    otlp_endpoint: str | None = None  # e.g. "http://127.0.0.1:4318/v1/traces"
    service_name: str = "actorproxy"
    export_interval_ms: float = 1000.0


class DatasetConfig(_Base, frozen=True):
    """The research dataset (see docs/dataset.md). No ``dir``: records are counted, not written."""

    dir: str | None = None
    queue_size: int = 10_000
    on_full: Literal["block", "drop"] = "block"
    batch_size: int = 1000
    flush_interval_ms: float = 200.0
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_s: float = 300.0
    retention_days: int | None = None
    redaction: RedactionConfig = RedactionConfig()


class Config(_Base, frozen=True):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    routing: RoutingConfig = RoutingConfig()
    prices: dict[str, Price] = {}
    key_limits: KeyLimitsConfig = KeyLimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    dataset: DatasetConfig = DatasetConfig()
    tracing: TracingConfig = TracingConfig()
    source: str = "<embedded default>"


EMBEDDED_DEFAULT = Config(
    providers=[ProviderConfig(name="mock", kind="mock", max_concurrency=256)],
    models=[
        ModelConfig(name="mock", targets=["mock/mock"]),
        ModelConfig(name="mock-embedding", targets=["mock/mock-embedding"]),
    ],
)


def load(path: str | os.PathLike[str]) -> Config:
    """Read, decode and check the TOML file at ``path``."""
    where = Path(path)
    try:
        raw = where.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file ({exc.strerror})") from None
    try:
        config = msgspec.toml.decode(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    config = msgspec.structs.replace(config, source=str(where))
    check(config)
    return config


def check(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    where = config.source
    names = [provider.name for provider in config.providers]
    for provider_name in names:
        if names.count(provider_name) > 1:
            raise ConfigError(f"{where}: providers: the name {provider_name!r} is used twice")
        if "/" in provider_name or not provider_name:
            raise ConfigError(
                f"{where}: providers: name {provider_name!r} must be non-empty, without '/'"
            )
    for index, provider in enumerate(config.providers):
        _check_provider(where, index, provider)
    aliases: set[str] = set()
    for index, model in enumerate(config.models):
        if model.name in aliases:
            raise ConfigError(f"{where}: models[{index}].name: {model.name!r} is used twice")
        aliases.add(model.name)
        if not model.targets:
            raise ConfigError(f"{where}: models[{index}].targets: needs at least one target")
        for target in model.targets:
            target_provider, _, upstream = target.partition("/")
            if target_provider not in names or not upstream:
                raise ConfigError(
                    f"{where}: models[{index}].targets: {target!r} is not "
                    f"'<provider>/<model>' with a configured provider ({', '.join(names)})"
                )
        _check_model(f"{where}: models[{index}]", model)
    _check_server(where, config.server)
    _check_routing(where, config)


def _check_provider(where: str, index: int, provider: ProviderConfig) -> None:
    key = f"{where}: providers[{index}]"
    if provider.kind != "mock" and not provider.url:
        raise ConfigError(f"{key}.base_url: required for kind {provider.kind!r}")
    defaults = {
        "anthropic": AnthropicConfig(),
        "azure": AzureConfig(),
        "ollama": OllamaConfig(),
        "mock": MockConfig(),
    }
    for kind, default in defaults.items():
        if kind != provider.kind and getattr(provider, kind) != default:
            raise ConfigError(f"{key}.{kind}: only for kind {kind!r}, not {provider.kind!r}")
    if provider.base_url and not provider.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.base_url: must start with http:// or https://")
    if provider.max_concurrency < 1:
        raise ConfigError(f"{key}.max_concurrency: must be at least 1")
    if provider.max_queue < 0:
        raise ConfigError(f"{key}.max_queue: must not be negative")
    _check_limits(key, provider)


def _check_limits(key: str, provider: ProviderConfig) -> None:
    """Limits, timeouts and breaker settings: each a positive number where it is set."""
    positive: dict[str, float | None] = {
        "rpm": provider.rpm,
        "tpm": provider.tpm,
        "rate_window_s": provider.rate_window_s,
        "max_queue_wait_s": provider.max_queue_wait_s,
        "connect_timeout_s": provider.connect_timeout_s,
        "first_byte_timeout_s": provider.first_byte_timeout_s,
        "idle_timeout_s": provider.idle_timeout_s,
        "request_timeout_s": provider.request_timeout_s,
        "breaker_failures": provider.breaker_failures,
        "breaker_window_s": provider.breaker_window_s,
        "breaker_min_calls": provider.breaker_min_calls,
        "breaker_probes": provider.breaker_probes,
    }
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{key}.{name}: must be positive")
    if provider.default_output_tokens < 0 or provider.max_pause_s < 0:
        raise ConfigError(f"{key}: default_output_tokens and max_pause_s must not be negative")
    if not 0.0 < provider.breaker_failure_rate <= 1.0:
        raise ConfigError(f"{key}.breaker_failure_rate: must be in (0, 1]")


def _check_model(key: str, model: ModelConfig) -> None:
    if model.weights is not None:
        if model.strategy != "weighted":
            raise ConfigError(f'{key}.weights: only for strategy = "weighted"')
        if len(model.weights) != len(model.targets):
            raise ConfigError(
                f"{key}.weights: {len(model.weights)} weights for {len(model.targets)} targets; "
                "give one weight per target"
            )
        if not all(math.isfinite(w) and w >= 0 for w in model.weights) or not any(model.weights):
            raise ConfigError(f"{key}.weights: must be finite, >= 0, and not all 0")
    if model.max_retries is not None and model.max_retries < 0:
        raise ConfigError(f"{key}.max_retries: must not be negative")


def _check_routing(where: str, config: Config) -> None:
    routing = config.routing
    for name in ("retry_base_s", "retry_cap_s", "retry_max_wait_s"):
        if not getattr(routing, name) >= 0:
            raise ConfigError(f"{where}: routing.{name}: must not be negative")
    if routing.max_retries < 0:
        raise ConfigError(f"{where}: routing.max_retries: must not be negative")
    if not routing.total_timeout_s > 0 or not routing.latency_tau_s > 0:
        raise ConfigError(f"{where}: routing.total_timeout_s and latency_tau_s must be positive")
    for model, price in config.prices.items():
        values = (price.input, price.output, price.cached_input or 0.0)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ConfigError(f"{where}: prices.{model!r}: prices must be finite and >= 0")
    limits = config.key_limits
    if not limits.bytes_per_token > 0:
        raise ConfigError(f"{where}: key_limits: bytes_per_token > 0 required")


def _check_server(where: str, server: ServerConfig) -> None:
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"{where}: server.port: {server.port} is not a TCP port")
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError(f"{where}: server.tls_cert and server.tls_key go together")
    if server.max_body_bytes < 1024:
        raise ConfigError(f"{where}: server.max_body_bytes: must be at least 1024")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

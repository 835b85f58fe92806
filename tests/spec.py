"""Validate JSON against the official OpenAI OpenAPI spec.

The spec lives at ``<repo>/../shared/specs/openai-openapi.yaml`` (CI clones the repository with
``shared/`` beside it). It is OpenAPI 3.1, whose schemas are JSON Schema 2020-12 apart from a few
OpenAPI-isms, handled here:

- ``nullable: true`` (an OpenAPI 3.0 keyword that 3.1 dropped, still used ~110 times, e.g. on
  ``CreateChatCompletionStreamResponse.usage`` and ``choices[].finish_reason``) is rewritten to
  ``anyOf: [{type: null}, <schema>]``; left alone, a streamed ``"usage": null`` would fail.
- ``discriminator``, ``example``, ``x-*`` and ``deprecated`` are ignored (unknown keywords or
  annotations to the validator). Dropping ``discriminator`` is safe where its ``oneOf`` branches
  differ in a ``type`` enum, as the tool-call unions do (tested in tests/unit/test_spec.py).
- Spec gaps, patched in ``_PATCHES``: ``Embedding.embedding`` is declared as an array of numbers
  only, but with ``encoding_format: "base64"`` (the openai SDK's default) the API returns a string.
- Not in the spec: ``CreateCompletionStreamResponse``, derived here for legacy completion stream
  chunks (see `_completion_chunk`).

Parsing the 87k-line YAML and rewriting it takes 1.5-2.5 s even with libyaml, so the result is
cached per process and on disk as JSON in the temp dir (~2 MB, ~50 ms to load), keyed by the spec
file's path, mtime and size and by this module's source.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SPEC = Path("shared") / "specs" / "openai-openapi.yaml"
# The nearest ancestor's shared/ (a checkout under /work/wt/<name> has it two levels further up).
SPEC_PATH = next(
    (up / _SPEC for up in Path(__file__).resolve().parents if (up / _SPEC).exists()),
    Path(__file__).resolve().parent.parent.parent / _SPEC,
)
SPEC_URI = "urn:openai-openapi"
_CACHE_PREFIX = "actorproxy-openai-spec-"

# Keywords whose values are data, not subschemas: never rewritten.
_DATA_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})
# Keywords whose values map arbitrary names to subschemas.
_NAMED_SUBSCHEMAS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_MAX_REASON = 300
_MAX_LISTED = 5

# (schema name, property) -> replacement subschema, for places where the spec disagrees with
# what the API actually sends.
_PATCHES: dict[tuple[str, str], dict[str, Any]] = {
    ("Embedding", "embedding"): {
        "anyOf": [
            {"type": "array", "items": {"type": "number"}},
            {"type": "string", "contentEncoding": "base64"},
        ]
    },
}


def validate(schema_name: str, instance: object) -> None:
    """Raise AssertionError naming each failing path if ``instance`` is not a ``schema_name``."""
    errors = list(_validator(schema_name).iter_errors(instance))
    if errors:
        raise AssertionError(_describe(schema_name, errors))


def validate_sse_chunks(schema_name: str, chunks: bytes | str | Iterable[object]) -> list[Any]:
    """Validate every chunk of a stream against ``schema_name`` and return the decoded chunks.

    ``chunks`` is either a raw ``text/event-stream`` body (which must end with ``data: [DONE]``)
    or an iterable of chunks, each a decoded JSON value or its JSON text.
    """
    decoded = list(_decode_chunks(chunks))
    for index, chunk in enumerate(decoded):
        try:
            validate(schema_name, chunk)
        except AssertionError as error:
            raise AssertionError(f"chunk {index}: {error}") from None
    return decoded


def sse_data(body: bytes | str) -> list[str]:
    """The ``data`` payload of each event in a ``text/event-stream`` body, ``[DONE]`` included."""
    text = body.decode() if isinstance(body, bytes) else body
    events: list[str] = []
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if lines:
                events.append("\n".join(lines))
            lines = []
        elif line.startswith("data:"):
            lines.append(line.removeprefix("data:").removeprefix(" "))
    if lines:
        raise AssertionError(f"SSE body ends inside an event (no blank line): {lines!r}")
    return events


def _decode_chunks(chunks: bytes | str | Iterable[object]) -> Iterator[object]:
    if isinstance(chunks, bytes | str):
        events = sse_data(chunks)
        if not events or events[-1] != "[DONE]":
            raise AssertionError(f"SSE body does not end with data: [DONE]: {events[-3:]!r}")
        if "[DONE]" in events[:-1]:
            raise AssertionError("SSE body has events after data: [DONE]")
        chunks = events[:-1]
    for chunk in chunks:
        yield json.loads(chunk) if isinstance(chunk, bytes | str) else chunk


def _describe(schema_name: str, errors: list[ValidationError]) -> str:
    errors.sort(key=relevance, reverse=True)
    lines = [f"instance is not a valid {schema_name} ({len(errors)} error(s)):"]
    for error in errors[:_MAX_LISTED]:
        lines.append(f"  at {error.json_path}: {_reason(error)}")
    if len(errors) > _MAX_LISTED:
        lines.append(f"  ... and {len(errors) - _MAX_LISTED} more")
    return "\n".join(lines)


def _reason(error: ValidationError) -> str:
    if error.context:
        # anyOf/oneOf: the most relevant branch failure says more than "is not valid under".
        best = max(error.context, key=relevance)
        reason = f"{error.message} (closest branch, at {best.json_path}: {best.message})"
    else:
        reason = str(error.message)
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _schemas():
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH}")
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry())


@functools.cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = _document()["components"]["schemas"]
    return schemas


@functools.cache
def _document() -> dict[str, Any]:
    """The spec, rewritten as JSON Schema; from the JSON cache when it is fresh."""
    cache = _cache_path()
    try:
        document: dict[str, Any] = msgspec.json.decode(cache.read_bytes())
    except (OSError, msgspec.DecodeError):
        pass
    else:
        return document
    encoded = msgspec.json.encode(_parse())
    with contextlib.suppress(OSError):
        for stale in cache.parent.glob(f"{_CACHE_PREFIX}*.json"):
            stale.unlink(missing_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(encoded)
        partial.replace(cache)
    # Decoding what we cache (dates in examples become strings) keeps both paths identical.
    document = msgspec.json.decode(encoded)
    return document


def _cache_path() -> Path:
    """Keyed by the spec file's identity and this module's source, so edits here invalidate it."""
    stat = SPEC_PATH.stat()
    key = hashlib.sha256(f"{SPEC_PATH}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    key.update(Path(__file__).read_bytes())
    return Path(tempfile.gettempdir()) / f"{_CACHE_PREFIX}{key.hexdigest()[:16]}.json"


def _parse() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as file:
        document: dict[str, Any] = yaml.load(file, Loader=loader)
    schemas = document["components"]["schemas"]
    for (schema_name, prop), replacement in _PATCHES.items():
        schemas[schema_name]["properties"][prop] = replacement
    schemas["CreateCompletionStreamResponse"] = _completion_chunk(
        schemas["CreateCompletionResponse"]
    )
    document["components"]["schemas"] = {
        name: _to_json_schema(schema) for name, schema in schemas.items()
    }
    return document


def _completion_chunk(response: dict[str, Any]) -> dict[str, Any]:
    """Legacy completions stream chunks of `CreateCompletionResponse` shape, but (like chat
    chunks) with ``finish_reason: null`` until the last chunk and ``usage: null`` when
    ``include_usage`` is on; the spec has no schema for them."""
    chunk = copy.deepcopy(response)
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]["nullable"] = True
    chunk["properties"]["usage"]["nullable"] = True
    return chunk


def _to_json_schema(node: object) -> Any:
    """Rewrite OpenAPI ``nullable`` into JSON Schema; leave data-valued keywords untouched."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _keyword(key, value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _keyword(key: str, value: object) -> Any:
    if key in _DATA_KEYWORDS:
        return value
    if key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
        # Keys here are property names ("nullable", "default", ...), not keywords.
        return {name: _to_json_schema(schema) for name, schema in value.items()}
    return _to_json_schema(value)

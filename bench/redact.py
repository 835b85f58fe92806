"""Throughput of :meth:`Redactor.redact_json` on typical chat JSON, on one core.

Two ways: each body alone through every detector (``*_mb_s``), and a whole corpus at once the way
the dataset writer does it, gates first (``storage.prefilter``: RE2 over the batch, GIL released)
and then the Python detectors only where a gate matched (``*_batch_mb_s``).

Run: ``.venv/bin/python -m bench.redact`` (prints one JSON object with MB/s per corpus and mode).
"""

from __future__ import annotations

import json
import random
import time

from actorproxy.redact import RedactionConfig, Redactor
from actorproxy.storage.prefilter import Prefilter

_VOCABULARY = (
    "the model should answer in a concise way and explain each step of the reasoning about "
    "deployment latency tokens budget request response cache retry timeout stream chunk user "
    "assistant system tool function call arguments result error status code version release "
    "python trio async await nursery channel actor supervisor breaker limiter queue worker"
)
_CODE = (
    "def handler(request):\n    body = await request.json()\n    for item in body['items']:\n"
    "        total += item['price'] * item['qty']  # 12.50 each\n    return {'total': total}\n"
)
_PII = (
    "alice.smith@example.com",
    "+1 (555) 123-4567",
    "4111 1111 1111 1111",
    "192.168.10.24",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
)


def _prose(rng: random.Random, words: int) -> str:
    vocabulary = _VOCABULARY.split()
    parts = []
    for _ in range(words):
        roll = rng.random()
        if roll < 0.05:
            parts.append(str(rng.randint(1, 5000)))
        elif roll < 0.07:
            parts.append(f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}")
        else:
            parts.append(rng.choice(vocabulary))
    return " ".join(parts) + ".\n\n"


def chat_request(rng: random.Random, turns: int = 8, pii: bool = False) -> bytes:
    """A chat completion request shaped like real traffic: prose, code, numbers."""
    messages = [{"role": "system", "content": _prose(rng, 80)}]
    for turn in range(turns):
        content = _prose(rng, 150) + "```python\n" + _CODE + "```\n" + _prose(rng, 60)
        if pii:
            content += f" contact {_PII[turn % len(_PII)]} please"
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": content})
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 1024, "temperature": 0.7}
    return json.dumps(body).encode()


def chat_response(rng: random.Random) -> bytes:
    message = {"role": "assistant", "content": _prose(rng, 400)}
    body = {
        "id": "chatcmpl-9aBcDeFgHiJkLmNoP",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1234, "completion_tokens": 456, "total_tokens": 1690},
    }
    return json.dumps(body).encode()


def embeddings_response(rng: random.Random, dims: int = 1536) -> bytes:
    """The digit-heaviest body the gateway stores: floats, no prose."""
    vector = [rng.gauss(0, 0.05) for _ in range(dims)]
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}]}
    return json.dumps(body).encode()


def _throughput(redactor: Redactor, bodies: list[bytes], rounds: int = 15) -> float:
    """MB/s of the best round: other processes on the machine only ever slow a round down."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for body in bodies:
            redactor.redact_json(body)
        best = min(best, time.perf_counter() - began)
    return sum(map(len, bodies)) / best / 1e6


def _batch_throughput(redactor: Redactor, bodies: list[bytes], rounds: int = 15) -> float:
    """MB/s of the best round, gates over the whole corpus first, as ``derive_all`` does."""
    prefilter = Prefilter(redactor.gates)
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for body, mask in zip(bodies, prefilter.candidates(bodies), strict=True):
            redactor.redact_json(body, mask)
        best = min(best, time.perf_counter() - began)
    return sum(map(len, bodies)) / best / 1e6


def main() -> None:
    rng = random.Random(1)
    corpora = {
        "chat_clean": [chat_request(rng) for _ in range(20)] + [chat_response(rng)],
        "chat_with_pii": [chat_request(rng, pii=True) for _ in range(20)],
        "embeddings": [embeddings_response(rng) for _ in range(5)],
    }
    mask = Redactor(RedactionConfig())
    hashed = Redactor(RedactionConfig(mode="hash"), hmac_key=b"bench-key")
    result: dict[str, float | int] = {
        "mean_body_bytes": sum(map(len, corpora["chat_clean"])) // len(corpora["chat_clean"]),
    }
    for name, bodies in corpora.items():
        result[f"{name}_mask_mb_s"] = round(_throughput(mask, bodies), 1)
        result[f"{name}_mask_batch_mb_s"] = round(_batch_throughput(mask, bodies), 1)
    result["chat_with_pii_hash_mb_s"] = round(_throughput(hashed, corpora["chat_with_pii"]), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

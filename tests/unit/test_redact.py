"""Redaction: each detector's positives and negatives, JSON safety, and hypothesis properties."""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import re
from collections.abc import Callable
from typing import get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorproxy import redact, redact_detectors
from actorproxy.redact import RedactionConfig, Redactor, UserPattern
from actorproxy.redact_detectors import BUILTIN_NAMES, DetectorName, luhn_ok
from actorproxy.storage.prefilter import Prefilter

MASK = Redactor(RedactionConfig())
FEW = settings(max_examples=60, deadline=None)

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]


def only(name: DetectorName) -> Redactor:
    return Redactor(RedactionConfig(detectors=[name]))


def assert_clean(text: str) -> None:
    assert MASK.redact(text) == (text, 0)


# --- example-based, one block per detector ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["alice@example.com", "first.last+tag@sub.example.co.uk", "X_Y-z%1@mail-01.example.org"],
)
def test_email(value: str) -> None:
    assert MASK.redact(f"write to {value}, thanks") == ("write to <EMAIL>, thanks", 1)


@pytest.mark.parametrize("text", ["@decorator", "user@localhost", "a@b", "x @ y.com", "a@b.c1"])
def test_email_negatives(text: str) -> None:
    assert_clean(text)


@pytest.mark.parametrize(
    "value",
    [
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "+15551234567",
        "+33 6 12 34 56 78",
        "555-123-4567",
        "(555) 123-4567",
        "555.123.4567",
        "020 7946 0958",
        "07700 900123",
        "06 12 34 56 78",
    ],
)
def test_phone(value: str) -> None:
    assert MASK.redact(f"call {value} today") == ("call <PHONE> today", 1)


@pytest.mark.parametrize(
    "text",
    [
        "in 1999 and 2024",
        "it costs 1234.56 or $19.99",
        "created 1700000000 at 1700000000123",
        "used 1024 tokens, 15% of 4096",
        "version 1.2.3 and v10.20.30",
        '{"max_tokens": 1024, "temperature": 0.7}',
        "2024-01-15T12:30:45Z and 15/01/2024",
        "score +1 and 1e+10 and 3.14159265358979",
        "pages 100-200, 1,234,567 rows",
    ],
)
def test_phone_negatives(text: str) -> None:
    assert_clean(text)


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
        "4222222222222",
    ],
)
def test_credit_card(value: str) -> None:
    assert MASK.redact(f"card {value}.") == ("card <CREDIT_CARD>.", 1)


@pytest.mark.parametrize(
    "text",
    [
        "card 4111111111111112",  # Luhn fails
        "ts 1700000000000",  # milliseconds, starts with 1
        '{"logprob": -0.4111111111111111}',
        "id 41111111111111111111111",  # too long
        "4111 1111 1111 1112",
    ],
)
def test_credit_card_negatives(text: str) -> None:
    assert_clean(text)


@pytest.mark.parametrize("value", ["192.168.0.1", "10.0.0.255", "8.8.8.8", "255.255.255.255"])
def test_ipv4(value: str) -> None:
    assert MASK.redact(f"host {value}.") == ("host <IPV4>.", 1)


@pytest.mark.parametrize("text", ["1.2.3.4.5", "256.1.1.1", "1.2.3", "v1.2.3.4", "0.10.20"])
def test_ipv4_negatives(text: str) -> None:
    assert_clean(text)


@pytest.mark.parametrize(
    "value",
    [
        "2001:db8::8a2e:370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::1",
        "fe80::1",
        "::ffff:192.168.0.1",
        "1::",
    ],
)
def test_ipv6(value: str) -> None:
    assert MASK.redact(f"addr {value} up") == ("addr <IPV6> up", 1)


@pytest.mark.parametrize(
    "text", ["at 12:30:45", "std::vector<int>", "impl Add::add", "x :: a", "mac 00:1a:2b:3c:4d:5e"]
)
def test_ipv6_negatives(text: str) -> None:
    assert_clean(text)


def test_ipv6_before_a_colon_in_prose() -> None:
    assert MASK.redact("use fe80::1: it works") == ("use <IPV6>: it works", 1)


@pytest.mark.parametrize("word", ["Bearer", "bearer", "BEARER", "BeArEr"])
def test_bearer_token_any_case(word: str) -> None:
    text = f"Authorization: {word} eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-_x"
    assert MASK.redact(text) == ("Authorization: <BEARER_TOKEN>", 1)


def test_long_tokens_are_redacted_whole() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9." + "aB3-_" * 200 + ".sig"
    assert MASK.redact(f"Bearer {jwt}\n") == ("<BEARER_TOKEN>\n", 1)
    assert MASK.redact("sk-" + "aB3" * 100) == ("<API_KEY>", 1)


@pytest.mark.parametrize(
    "text", ["the bearer of bad news", "Bearer bonds", "bearer instruments", "Bearer abc"]
)
def test_bearer_negatives(text: str) -> None:
    assert_clean(text)


@pytest.mark.parametrize(
    "value",
    [
        "sk-" + "aB3" * 16,
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_-Q",
        "sk-ant-api03-" + "xY9" * 31 + "AA",
        "sk-ap-" + "Zq7_-" * 8 + "abc",
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "ghp_" + "a1B2" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghij",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "hf_" + "Ab1" * 11 + "x",
    ],
)
def test_api_key(value: str) -> None:
    assert MASK.redact(f"key={value} ok") == ("key=<API_KEY> ok", 1)


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-compatible-estimators-and-pipelines",
        "task-management-system-overview-document",
        "hf_hub_download and hf_transformersconfigurationloader",
        "ghp_short AKIA sk-abc AIza",
        "xoxo-hugs-and-kisses",
    ],
)
def test_api_key_negatives(text: str) -> None:
    assert_clean(text)


# --- overlaps, config, modes ------------------------------------------------------------------


def test_longest_match_wins_and_counts_once() -> None:
    key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
    assert MASK.redact(f"Bearer {key}") == ("<BEARER_TOKEN>", 1)
    assert MASK.redact("::ffff:192.168.0.1") == ("<IPV6>", 1)


def test_user_patterns_upper_case_name_and_win_ties() -> None:
    config = RedactionConfig(patterns=[UserPattern(name="employee_id", regex=r"EMP-\d{6}")])
    assert Redactor(config).redact("by EMP-123456 at a@b.io") == (
        "by <EMPLOYEE_ID> at <EMAIL>",
        2,
    )


def test_bad_user_pattern_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'ticket'"):
        Redactor(RedactionConfig(patterns=[UserPattern(name="ticket", regex="(")]))
    with pytest.raises(ValueError, match="name"):
        Redactor(RedactionConfig(patterns=[UserPattern(name="a b", regex="x")]))


def test_detectors_can_be_chosen() -> None:
    assert only("email").redact("a@b.io 192.168.0.1") == ("<EMAIL> 192.168.0.1", 1)
    with pytest.raises(ValueError, match="unknown redaction detectors"):
        Redactor(RedactionConfig(detectors=["ssn"]))  # type: ignore[list-item]


def test_config_defaults_and_toml() -> None:
    assert RedactionConfig().detectors == list(BUILTIN_NAMES)
    assert set(get_args(DetectorName)) == set(BUILTIN_NAMES)
    toml = b'mode = "hash"\nhash_key_env = "K"\n[[patterns]]\nname = "emp"\nregex = "EMP-\\\\d+"\n'
    config = msgspec.toml.decode(toml, type=RedactionConfig)
    assert config.patterns == [UserPattern(name="emp", regex=r"EMP-\d+")]
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.toml.decode(b'hmac_key = "secret"\n', type=RedactionConfig)
    with pytest.raises(msgspec.ValidationError, match="detectors"):
        msgspec.toml.decode(b'detectors = ["ssn"]\n', type=RedactionConfig)


def test_hash_mode_needs_a_key_and_joins_equal_values() -> None:
    with pytest.raises(ValueError, match="hmac_key"):
        Redactor(RedactionConfig(mode="hash"))
    hashed = Redactor(RedactionConfig(mode="hash"), hmac_key=b"k")
    digest = hmac.new(b"k", b"a@b.io", hashlib.sha256).hexdigest()[:12]
    assert hashed.redact("A@B.io and a@b.io") == (f"<EMAIL:{digest}> and <EMAIL:{digest}>", 2)
    same_card = hashed.redact("4111 1111 1111 1111 = 4111111111111111")[0]
    assert re.fullmatch(r"<CREDIT_CARD:([0-9a-f]{12})> = <CREDIT_CARD:\1>", same_card)


def test_omit_bodies() -> None:
    omit = Redactor(RedactionConfig(mode="omit_bodies"))
    assert omit.redact_json(b'{"a": "x@y.io"}') == (None, 0)


def test_redaction_is_pure_code() -> None:
    allowed = {"__future__", "bisect", "hashlib", "hmac", "ipaddress", "re", "dataclasses"}
    allowed |= {"typing", "collections.abc", "msgspec", "actorproxy.redact_detectors"}
    for module in (redact, redact_detectors):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert imported <= allowed, imported - allowed


# --- JSON bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (r'{"q": "a@b.com\""}', r'{"q": "<EMAIL>\""}'),
        (r'{"q": "\"a@b.com\""}', r'{"q": "\"<EMAIL>\""}'),
        (r'{"q": "call\n555-123-4567\nnow"}', r'{"q": "call\n<PHONE>\nnow"}'),
        (r'{"q": "x\t192.168.0.1\r\n"}', r'{"q": "x\t<IPV4>\r\n"}'),
        (r'{"q": "\u003cfoo@bar.com\u003e"}', r'{"q": "\u003c<EMAIL>\u003e"}'),
        (r'{"q": "\\nfoo@bar.com"}', r'{"q": "\\n<EMAIL>"}'),
        (r'{"q": "\u00e9foo@bar.com"}', r'{"q": "\u00e9<EMAIL>"}'),
        ('{"card": 4111111111111111}', '{"card": "<CREDIT_CARD>"}'),
        ('{"a@b.com": "a@b.com"}', '{"a@b.com": "<EMAIL>"}'),
    ],
)
def test_json_edge_cases(body: str, expected: str) -> None:
    out, _ = MASK.redact_json(body.encode())
    assert out == expected
    json.loads(out)


def test_user_pattern_cannot_break_json() -> None:
    loose = Redactor(RedactionConfig(patterns=[UserPattern(name="any", regex=r'[\\"n:0-9]+')]))
    body = json.dumps({"a": 'x"y\\n', "n": [1, 2]}).encode()
    out, _ = loose.redact_json(body)
    assert out is not None
    assert json.loads(out).keys() == {"a", "n"}


def test_nested_tool_arguments_stay_valid_json() -> None:
    arguments = json.dumps({"email": "a@b.com", "note": "line\n555-123-4567"})
    body = json.dumps({"tool_calls": [{"function": {"arguments": arguments}}]})
    out, count = MASK.redact_json(body.encode())
    assert out is not None and count == 2
    inner = json.loads(json.loads(out)["tool_calls"][0]["function"]["arguments"])
    assert inner == {"email": "<EMAIL>", "note": "line\n<PHONE>"}


def test_not_json_is_redacted_everywhere_and_bad_utf8_replaced() -> None:
    assert MASK.redact_json(b"data: a@b.com\n\n") == ("data: <EMAIL>\n\n", 1)
    assert MASK.redact_json(b'{"a": "\xff a@b.com"}') == ('{"a": "\ufffd <EMAIL>"}', 1)


# --- hypothesis -------------------------------------------------------------------------------

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def chars(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size)


def mixed(alphabet: str, size: int) -> st.SearchStrategy[str]:
    """Random key material with at least one upper-case letter and one digit."""
    return st.builds(
        lambda a, b, rest: a + b + rest,
        chars("QXZ", 1),
        chars("0123456789", 1),
        chars(alphabet, size - 2),
    )


def luhn_complete(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_ok(partial + d))


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("34", 15), ("6011", 16)]))
    number = luhn_complete(prefix + draw(chars("0123456789", length - len(prefix) - 1)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    groups = (number[:4], number[4:10], number[10:]) if length == 15 else re.findall("....", number)
    return sep.join(groups)


@st.composite
def phones(draw: st.DrawFn) -> str:
    area = draw(chars("23456789", 1)) + draw(chars("0123456789", 2))
    exchange = draw(chars("0123456789", 3))
    line, four = draw(chars("0123456789", 4)), draw(chars("0123456789", 4))
    return draw(
        st.sampled_from(
            [
                f"{area}-{exchange}-{line}",
                f"({area}) {exchange}-{line}",
                f"{area}.{exchange}.{line}",
                f"+1 ({area}) {exchange}-{line}",
                f"+1 {area} {exchange} {line}",
                f"+1{area}{exchange}{line}",
                f"+44 20 {four} {line}",
                f"020 {four} {line}",
            ]
        )
    )


emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,20}", fullmatch=True),
    st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3
    ),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
api_keys = st.one_of(
    mixed(ALNUM, 48).map("sk-".__add__),
    mixed(ALNUM + "_-", 40).map("sk-proj-".__add__),
    mixed(ALNUM + "_-", 93).map(lambda s: f"sk-ant-api03-{s}AA"),
    mixed(ALNUM + "_-", 43).map("sk-ap-".__add__),
    chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16).map("AKIA".__add__),
    chars(ALNUM + "_-", 35).map("AIza".__add__),
    mixed(ALNUM, 36).map("ghp_".__add__),
    mixed(ALNUM + "_", 60).map("github_pat_".__add__),
    mixed(ALNUM, 24).map("xoxb-1234-".__add__),
    mixed(ALNUM, 24).map("sk_live_".__add__),
    mixed(ALNUM, 34).map("hf_".__add__),
)
bearers = st.builds(
    lambda word, token: (f"{word} {token}", token),
    st.sampled_from(["Bearer", "bearer", "BEARER"]),
    mixed(ALNUM + "-._~+/", 32),
)
ipv6s = st.ip_addresses(v=6).map(str).filter(lambda s: any(c.isdigit() for c in s))

SENSITIVE: dict[str, st.SearchStrategy[tuple[str, str]]] = {
    "EMAIL": emails.map(lambda v: (v, v)),
    "PHONE": phones().map(lambda v: (v, v)),
    "CREDIT_CARD": cards().map(lambda v: (v, v)),
    "IPV4": st.ip_addresses(v=4).map(lambda ip: (str(ip), str(ip))),
    "IPV6": ipv6s.map(lambda v: (v, v)),
    "BEARER_TOKEN": bearers,
    "API_KEY": api_keys.map(lambda v: (v, v)),
}
VOCABULARY = (
    "the model answered quickly while users waited for tokens from each deployment retry "
    "desk task sk hf gh xox key std::vector C++ e.g. i.e. foo.bar score: (note) - -- ok"
)
WORDS = st.sampled_from(VOCABULARY.split())
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", " (", ") ", ": ", '"', "'", " <", "> "])
prose = st.lists(WORDS, max_size=6).map(" ".join)


def embedded(label: str) -> st.SearchStrategy[tuple[str, str]]:
    """(text, the part that must vanish) with a generated value between random prose."""
    return st.builds(
        lambda before, sep1, pair, sep2, after: (f"{before}{sep1}{pair[0]}{sep2}{after}", pair[1]),
        prose,
        SEPARATORS,
        SENSITIVE[label],
        SEPARATORS,
        prose,
    )


@pytest.mark.parametrize("label", list(SENSITIVE))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_generated_value_is_redacted(label: str, data: st.DataObject) -> None:
    text, secret = data.draw(embedded(label))
    out, count = MASK.redact(text)
    assert secret not in out and f"<{label}>" in out and count >= 1, out


@pytest.mark.parametrize("label", list(SENSITIVE))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_generated_value_is_redacted_inside_json(label: str, data: st.DataObject) -> None:
    text, secret = data.draw(embedded(label))
    out, count = MASK.redact_json(json.dumps({"content": text}).encode())
    assert out is not None and count >= 1
    assert secret not in json.loads(out)["content"], out


numberish = st.one_of(
    st.integers(0, 10**10).map(str),
    st.integers(1900, 2100).map(str),
    st.builds("${}.{:02d}".format, st.integers(0, 99999), st.integers(0, 99)),
    st.builds("{}.{:02d}".format, st.integers(0, 99999), st.integers(0, 99)),
    st.builds(
        "{}-{:02d}-{:02d}".format, st.integers(1900, 2100), st.integers(1, 12), st.integers(1, 28)
    ),
    st.builds(
        "{:02d}:{:02d}:{:02d}".format, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)
    ),
    st.builds("{}.{}.{}".format, st.integers(0, 30), st.integers(0, 30), st.integers(0, 300)),
    st.builds("v{}.{}.{}.{}".format, *[st.integers(0, 30)] * 4),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.integers(10**9, 2 * 10**9).map(str),
    st.integers(0, 100).map("{}%".format),
    st.integers(1, 10**6).map("{:,}".format),
)


@FEW
@given(st.lists(st.tuples(WORDS, numberish), max_size=12))
def test_ordinary_text_is_left_alone(pairs: list[tuple[str, str]]) -> None:
    text = " ".join(f"{word} {number}" for word, number in pairs)
    assert MASK.redact(text) == (text, 0)
    body = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 1024})
    assert MASK.redact_json(body.encode()) == (body, 0)


def with_secret(text: str, pair: tuple[str, str]) -> str:
    return f"{text} {pair[0]} {text}"


json_strings = st.one_of(
    st.text(max_size=10),
    st.builds(with_secret, st.text(max_size=5), st.one_of(list(SENSITIVE.values()))),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    cards().map(lambda c: int(re.sub("[ -]", "", c))),
    json_strings,
)
json_docs: st.SearchStrategy[Json] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_strings, inner, max_size=4),
    max_leaves=12,
)


def shape(doc: Json) -> object:
    if isinstance(doc, dict):
        return {key: shape(value) for key, value in doc.items()}
    if isinstance(doc, list):
        return [shape(value) for value in doc]
    return "scalar"


@settings(max_examples=100, deadline=None)
@given(json_docs, st.booleans(), st.sampled_from([None, 2]))
def test_redacted_json_stays_valid_with_the_same_shape(
    doc: Json, ascii_only: bool, indent: int | None
) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    out, _ = MASK.redact_json(body)
    assert out is not None
    assert shape(json.loads(out)) == shape(doc), out


def redact_with(key: bytes) -> Callable[[str], str]:
    return lambda text: Redactor(RedactionConfig(mode="hash"), hmac_key=key).redact(text)[0]


@FEW
@given(st.one_of(list(SENSITIVE.values())), st.binary(min_size=1), st.binary(min_size=1))
def test_hash_is_deterministic_per_key_and_differs_across_keys(
    pair: tuple[str, str], key: bytes, other: bytes
) -> None:
    first, again = redact_with(key)(pair[0]), redact_with(key)(pair[0])
    assert first == again and re.fullmatch(r"<[A-Z0-9_]+:[0-9a-f]{12}>", first)
    if other != key:
        assert redact_with(other)(pair[0]) != first


# --- the batch prefilter (gates over raw bytes, RE2 in Arrow) ---------------------------------

# Fragments that make anchors hit, miss by one character, or sit next to non-ASCII and broken
# UTF-8, joined at random: the gates must agree with the anchors on every one of them.
WORDISH = st.sampled_from(
    [
        *("bearer ", "BeArEr ", "beare ", "sk-", "rk_", "sk_", "ghp_", "ghx_", "github_pat_"),
        *("hf_", "xoxb-", "xoxz-", "AKIA", "ASIA", "AIza", "AIz", "é", "✓", "\\n", "::"),
        *("+0", "+4", "(555)", "-555-", ".555.", "06 ", "020 ", "4111 ", "fe80:", "12:30:"),
    ]
)
SINGLE = st.sampled_from(list(' .-+():_@"\\\nxAKSIzakrsghf'))
FRAGMENT = st.one_of(WORDISH, SINGLE, st.text("0123456789", min_size=1, max_size=12)).map(
    str.encode
)
RAW_TEXTS = st.lists(st.one_of(FRAGMENT, st.sampled_from([b"\xff", b"\xc3"])), max_size=24)


def anchors_hit(name: DetectorName, text: str) -> bool:
    return any(anchor.search(text) for anchor in redact_detectors.builtin(name).anchors)


@settings(max_examples=500, deadline=None)
@given(RAW_TEXTS.map(b"".join))
def test_each_gate_matches_exactly_when_its_anchors_hit(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for name in BUILTIN_NAMES:
        gate = redact_detectors.builtin(name).gate
        assert gate is not None
        hit = Prefilter([gate]).candidates([body]) == [1]
        assert hit == anchors_hit(name, text), (name, body)


ANCHOR_SAMPLES = [
    *("a@b", "+12", "(555)", "x-555-1234", "x.555.1234", "020 7946 0958", "07700 900123"),
    *("06 12 34 56 78", "4111 1111", "41111111", "1.2.3.4", "fe80::1", "::", "bearer abc"),
    *("sk-x", "rk_x", "ghp_x", "github_pat_x", "hf_x", "xoxb-x", "AKIA", "ASIA", "AIza"),
]
NEIGHBOURS = [b"", b" ", b"a", b"0", b".", b"-", b"+", "é".encode(), b"\xff", b"\\n"]


@pytest.mark.parametrize("sample", ANCHOR_SAMPLES)
def test_gates_and_anchors_agree_next_to_any_neighbour(sample: str) -> None:
    bodies = [b + sample.encode() + a for b in NEIGHBOURS for a in NEIGHBOURS]
    for name in BUILTIN_NAMES:
        gate = redact_detectors.builtin(name).gate
        assert gate is not None
        hits = Prefilter([gate]).candidates(bodies)
        expected = [int(anchors_hit(name, body.decode("utf-8", "replace"))) for body in bodies]
        assert hits == expected, name


def prefiltered(redactor: Redactor, bodies: list[bytes]) -> list[tuple[str | None, int]]:
    masks = Prefilter(redactor.gates).candidates(bodies)
    return [redactor.redact_json(body, mask) for body, mask in zip(bodies, masks, strict=True)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            json_docs.map(lambda doc: json.dumps(doc).encode()),
            st.one_of(list(SENSITIVE.values())).map(lambda pair: pair[0].encode()),
            RAW_TEXTS.map(b"".join),
        ),
        max_size=6,
    )
)
def test_prefiltered_redaction_equals_running_every_detector(bodies: list[bytes]) -> None:
    loose = Redactor(RedactionConfig(patterns=[UserPattern(name="word", regex="bearer")]))
    for redactor in (MASK, only("phone"), loose):
        assert prefiltered(redactor, bodies) == [redactor.redact_json(b) for b in bodies]


def test_a_clean_body_skips_every_gated_detector() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hello there"}]}).encode()
    assert Prefilter(MASK.gates).candidates([body, b"a@b.io"]) == [0, 1 << 2]
    assert MASK.gates[:2] == (redact_detectors.builtin("api_key").gate, MASK.gates[1])
    user = Redactor(RedactionConfig(patterns=[UserPattern(name="hi", regex="hello")]))
    assert user.gates[0] is None
    assert user.redact_json(body, 0) == (body.decode().replace("hello", "<HI>"), 1)

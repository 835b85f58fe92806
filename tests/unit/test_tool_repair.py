"""Tool calls written as text: what is recognised, what is left alone, and the stream hold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.adapters.tool_repair import (
    RepairedCall,
    StreamHold,
    could_be_call,
    parse_tool_calls,
)

TOOLS = frozenset({"get_weather", "search"})
WEATHER = RepairedCall("get_weather", '{"city":"Paris"}')
SEARCH = RepairedCall("search", '{"q":"trio"}')


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Paris"}}', [WEATHER]),
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', [WEATHER]),
        ('  \n{"name":"get_weather","arguments":{"city":"Paris"}}\n ', [WEATHER]),
        ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', [WEATHER]),
        ('{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}', [WEATHER]),
        ('{"id": "x", "name": "get_weather", "arguments": {"city": "Paris"}}', [WEATHER]),
        ('{"name": "get_weather"}', [RepairedCall("get_weather", "{}")]),
        (
            '[{"name": "get_weather", "arguments": {"city": "Paris"}},'
            ' {"name": "search", "arguments": {"q": "trio"}}]',
            [WEATHER, SEARCH],
        ),
        ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [WEATHER]),
        ('```\n{"name": "search", "arguments": {"q": "trio"}}\n```', [SEARCH]),
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
            [WEATHER],
        ),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "search", "arguments": {"q": "trio"}}\n</tool_call>',
            [WEATHER, SEARCH],
        ),
        ('<tool_call>{"name": "search", "arguments": {"q": "trio"}}', [SEARCH]),
    ],
)
def test_recognised_calls(text: str, calls: list[RepairedCall]) -> None:
    assert parse_tool_calls(text, TOOLS) == calls
    assert all(could_be_call(text[:end]) for end in range(len(text) + 1))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The weather in Paris is sunny.",
        '{"name": "unknown_tool", "arguments": {}}',
        '{"name": "get_weather", "arguments": {}} and more text',
        'Sure: {"name": "get_weather", "arguments": {}}',
        '{"name": "get_weather", "arguments": [1, 2]}',
        '{"name": "get_weather", "arguments": "not json"}',
        '{"name": "get_weather", "arguments": {}, "parameters": {}}',
        '{"name": "get_weather", "arguments": {}, "extra": 1}',
        '{"type": "other", "name": "get_weather"}',
        '{"answer": 42}',
        '[{"name": "get_weather"}, {"name": "nope"}]',
        "[]",
        "[1, 2, 3]",
        '{"name": "get_weather", "arguments": {',
        '```python\n{"name": "get_weather"}\n```',
        '```json\n{"name": "get_weather"}',
        "```json\n```",
        '<tool_call>{"name": "get_weather"}</tool_call> trailing',
        "<tool_call></tool_call>",
        '{"name": 7}',
    ],
)
def test_everything_else_is_left_alone(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) is None


def test_no_offered_tools_means_no_repair() -> None:
    assert parse_tool_calls('{"name": "get_weather", "arguments": {}}', frozenset()) is None


@pytest.mark.parametrize(
    ("prefix", "possible"),
    [
        ("", True),
        ("   \n", True),
        ("{", True),
        ('{"na', True),
        ('{"name"', True),
        ('{"answer"', False),
        ("{x", False),
        ("[", True),
        ("[{", True),
        ("[1", False),
        ("`", True),
        ("``", True),
        ("```", True),
        ("```js", True),
        ("```json\n{", True),
        ("```python", False),
        ("``x", False),
        ("<", True),
        ("<tool_c", True),
        ("<tool_call>", True),
        ("<tool_call>{", True),
        ("<tool_call>hello", False),
        ("<b>", False),
        ("Hello", False),
        (" H", False),
    ],
)
def test_could_be_call(prefix: str, possible: bool) -> None:
    assert could_be_call(prefix) is possible


def hold(
    pieces: list[str], tools: frozenset[str] = TOOLS
) -> tuple[list[str], str, list[RepairedCall]]:
    buffer = StreamHold(tools)
    released = [buffer.feed(piece) for piece in pieces]
    text, calls = buffer.finish()
    return released, text, calls


def test_hold_releases_plain_text_at_once() -> None:
    released, text, calls = hold(["  ", "Hello", " world"])
    assert released == ["", "  Hello", " world"]
    assert (text, calls) == ("", [])


def test_hold_keeps_a_call_until_the_end() -> None:
    pieces = ['{"name": ', '"get_weather", ', '"arguments": {"city": "Paris"}}']
    released, text, calls = hold(pieces)
    assert released == ["", "", ""]
    assert (text, calls) == ("", [WEATHER])


def test_hold_releases_json_that_names_no_tool_at_the_end() -> None:
    released, text, calls = hold(['{"name": ', '"nobody"}'])
    assert released == ["", ""]
    assert (text, calls) == ('{"name": "nobody"}', [])


def test_hold_releases_as_soon_as_it_cannot_be_a_call() -> None:
    released, text, _ = hold(["``", "`js", "x\nconst a = 1\n```"])
    assert released == ["", "", "```jsx\nconst a = 1\n```"]
    assert text == ""


# --- properties -------------------------------------------------------------------------------

ORDINARY = st.text().filter(lambda t: not t.lstrip().startswith(("{", "[", "`", "<")))


@given(ORDINARY)
def test_ordinary_text_is_never_a_call(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) is None


@given(st.text(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_hold_gives_back_the_text_unless_it_is_a_call(text: str, cuts: list[int]) -> None:
    points = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    released, rest, calls = hold(pieces)
    if calls:
        assert parse_tool_calls(text, TOOLS) == calls
        assert "".join(released) == rest == ""
    else:
        assert "".join(released) + rest == text


ARGUMENTS = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
CALL = st.tuples(
    st.sampled_from(sorted(TOOLS)), st.sampled_from(["arguments", "parameters"]), ARGUMENTS
)
WRAP = st.sampled_from(["{}", "```json\n{}\n```", "<tool_call>{}</tool_call>", "\n {} \n"])
Call = tuple[str, str, dict[str, object]]


@given(st.lists(CALL, min_size=1, max_size=3), WRAP, st.booleans())
def test_generated_calls_are_recognised(calls: list[Call], wrap: str, as_list: bool) -> None:
    objects = [{"name": name, key: arguments} for name, key, arguments in calls]
    payload = json.dumps(objects if as_list or len(objects) > 1 else objects[0])
    text = wrap.replace("{}", payload, 1)
    found = parse_tool_calls(text, TOOLS)
    assert found is not None
    assert [(call.name, json.loads(call.arguments)) for call in found] == [
        (name, arguments) for name, _, arguments in calls
    ]
    assert all(could_be_call(text[:end]) for end in range(len(text) + 1))

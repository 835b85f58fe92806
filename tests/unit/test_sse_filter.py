"""The stream filter: kept frames reach the client byte for byte, chosen ones are withheld.

Every transcript is fed whole, byte by byte and split at random points, with the same result.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.adapters.sse_filter import StreamFilter

PROMPT_FILTER = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
    b'[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}'
    b"\n\n"
)
ROLE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
HI = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"usage":null}]}\n\n'
STOP = b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"total_tokens":4}}\n\n'
NULL_USAGE = b'data: {"id":"","choices":[],"usage":null,"prompt_filter_results":[]}\n\n'
DONE = b"data: [DONE]\n\n"
AZURE = [PROMPT_FILTER, ROLE, HI, STOP, USAGE, DONE]
OPENROUTER = [
    b": OPENROUTER PROCESSING\n\n",
    b": OPENROUTER PROCESSING\n\n",
    b'data: {"id":"gen-1","provider":"X","choices":[{"index":0,"delta":{"content":"a"},'
    b'"native_finish_reason":null}]}\n\n',
    b':keep-alive\ndata: {"id":"gen-1","choices":[],"usage":{"prompt_tokens":1,"cost":0.1}}\n\n',
    DONE,
]
ODD = [
    b"\xef\xbb\xbf" + PROMPT_FILTER,  # a byte-order mark before the first frame
    b'event: message\r\nid: 7\r\ndata: {"choices":\r\ndata: []}\r\n\r\n',  # two data lines
    b'event: error\ndata: {"choices":[]}\n\n',  # not a chunk event: kept
    b"data: not json\n\n",
    b'data: {"choices":"nope"}\n\n',
    b'data: {"error":{"message":"overloaded"}}\n\n',
    b"\n",  # a stray blank line
    b'data: {"choices" : [ ] }\r\r',  # bare CR line ends
    b'retry: 10\ndata: {"choices":[{"index":0}]}\n\n',
    NULL_USAGE,
    DONE,
]


def run(pieces: Iterable[bytes], **options: bool) -> tuple[bytes, bytes]:
    stream = StreamFilter(**options)
    out = b"".join(stream.feed(piece) for piece in pieces) + stream.end()
    return out, stream.withheld()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


CASES = {
    "azure, drop": (AZURE, {"withhold_empty": True}, [PROMPT_FILTER]),
    "azure, usage injected": (
        AZURE,
        {"withhold_empty": True, "withhold_usage": True},
        [PROMPT_FILTER, USAGE],
    ),
    "azure, usage only": (AZURE, {"withhold_usage": True}, [USAGE]),
    "openrouter, usage injected": (OPENROUTER, {"withhold_usage": True}, [OPENROUTER[3]]),
    "odd frames": (ODD, {"withhold_empty": True}, [ODD[0], ODD[1], ODD[7], ODD[9]]),
}


@pytest.mark.parametrize(("frames", "options", "withheld"), CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("split", ["whole", "bytewise", "frames"])
def test_withheld_frames_leave_the_rest_untouched(
    frames: list[bytes], options: dict[str, bool], withheld: list[bytes], split: str
) -> None:
    data = b"".join(frames)
    pieces = {"whole": [data], "bytewise": bytewise(data), "frames": frames}[split]
    out, kept_back = run(pieces, **options)
    assert out == b"".join(frame for frame in frames if frame not in withheld)
    assert kept_back == b"".join(map(payload_of, withheld))


def payload_of(frame: bytes) -> bytes:
    """What the record gets for a withheld frame: its data lines' payload, normalised."""
    lines = frame.removeprefix(b"\xef\xbb\xbf").splitlines()
    data = [
        line.partition(b":")[2].removeprefix(b" ") for line in lines if line.startswith(b"data")
    ]
    return b"data: " + b"\n".join(data) + b"\n\n"


@given(st.data())
def test_random_splits(data: st.DataObject) -> None:
    for frames, options, withheld in CASES.values():
        whole = b"".join(frames)
        cuts = sorted(data.draw(st.sets(st.integers(0, len(whole)), max_size=12)))
        pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
        assert run(pieces, **options) == run([whole], **options)
        assert run(pieces, **options)[0] == b"".join(f for f in frames if f not in withheld)


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_keeping_everything_is_the_identity(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert run(pieces) == (data, b"")
    run(pieces, withhold_empty=True, withhold_usage=True)  # never raises, whatever the bytes


#: Frames that mean the same wherever they stand, and whether a filter that withholds both
#: kinds keeps them back.
POOL = [
    (PROMPT_FILTER, True),
    (ROLE, False),
    (HI, False),
    (STOP, False),
    (USAGE, True),
    (NULL_USAGE, True),
    (OPENROUTER[0], False),
    (OPENROUTER[2], False),
    (OPENROUTER[3], True),
    (ODD[1], True),
    (ODD[2], False),
    (ODD[3], False),
    (ODD[4], False),
    (ODD[5], False),
    (ODD[8], False),
    (DONE, False),
]


@given(st.lists(st.sampled_from(POOL), max_size=20), st.lists(st.integers(0, 4000), max_size=10))
def test_random_streams(frames: list[tuple[bytes, bool]], cuts: list[int]) -> None:
    whole = b"".join(frame for frame, _ in frames)
    points = sorted({min(cut, len(whole)) for cut in cuts})
    pieces = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    out, withheld = run(pieces, withhold_empty=True, withhold_usage=True)
    assert out == b"".join(frame for frame, held in frames if not held)
    assert withheld == b"".join(payload_of(frame) for frame, held in frames if held)


def test_nothing_withheld_when_not_asked() -> None:
    data = b"".join(AZURE)
    assert run([data]) == (data, b"")


def test_client_usage_is_kept_while_filter_chunks_go() -> None:
    out, withheld = run([b"".join(AZURE)], withhold_empty=True)
    assert USAGE in out
    assert PROMPT_FILTER not in out
    assert withheld == PROMPT_FILTER


def test_null_usage_counts_as_no_usage() -> None:
    out, withheld = run([NULL_USAGE, USAGE, DONE], withhold_empty=True)
    assert (out, withheld) == (USAGE + DONE, NULL_USAGE)


def test_a_frame_cut_by_the_end_of_the_body() -> None:
    assert run([ROLE, b'data: {"choices":[]}'], withhold_empty=True) == (
        ROLE,
        b'data: {"choices":[]}\n\n',
    )
    assert run([ROLE, b"data: [DONE]"], withhold_empty=True) == (ROLE + b"data: [DONE]", b"")


def test_cr_split_from_its_lf_is_one_line_end() -> None:
    frame = b'data: {"choices":\r\ndata: []}\r\n\r\n'
    cut = frame.index(b"\n")
    assert run([frame[:cut], frame[cut:]], withhold_empty=True) == (b"", payload_of(frame))


def test_withheld_is_empty_before_anything_arrives() -> None:
    stream = StreamFilter(withhold_empty=True)
    assert stream.feed(b"") == b""
    assert stream.end() == b""
    assert stream.withheld() == b""

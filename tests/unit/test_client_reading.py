"""The presets' native reading (`_native.estimate_tokens`, `usage_tokens`, `read_quotas`)
against their Python reading on ``json.loads`` and `parse_reset`, which is the reference:
where the native one answers, it answers the same; where it is not sure, it says so (and the
presets ask Python). Hand-built JSON texts reach what ``json.dumps`` never writes: repeated
keys, escaped keys, surrogate pairs and lone surrogates, bools and huge integers where a
count is read, spaces, NaN, malformed texts.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from admission import _native, presets

# JSON texts json.dumps does not write, as values.
_ODD_VALUES = [
    '"\\ud83d\\ude00"',  # a surrogate pair: one character
    '"\\ud83d"',  # a lone high surrogate
    '"\\ude00\\ud83d"',  # the wrong order: two
    '"\\ud83d\\u0041"',  # a high surrogate then another escape
    '"\\ud83dx"',
    '"a\\u0041\\n\\/"',
    '"caf\u00e9 \u4e2d\U0001f600"',  # raw UTF-8, astral included
    "true",
    "false",
    "null",
    "NaN",
    "-Infinity",
    "1.5",
    "-0",
    "1e3",
    "-7",
    "123456789012345678",
    "1234567890123456789",  # (19 digits: left to Python)
    "9" * 30,
    "[ ]",
    "{ }",
    '[1, [2, ["x"]], {"k": "vv"}]',
]
# Malformed pieces: the whole text is then refused by json.loads.
_BAD_VALUES = ["01", "1.", "-", "tru", '"\\x"', '"a\tb"', "[1,]", '{"a":1,}', '"open', "[1 2]"]

_KEYS = [
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "messages",
    "system",
    "prompt",
    "input",
    "content",
    "text",
    "usage",
    "message",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "model",
]


def _dumped(value: Any) -> st.SearchStrategy[str]:
    return st.booleans().map(lambda ascii: json.dumps(value, ensure_ascii=ascii))


_plain = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_json_values = st.recursive(
    _plain,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _key_text(key: str, escaped: bool) -> str:
    if escaped and key:  # (its first character as a \u escape: the same key)
        return f'"\\u{ord(key[0]):04x}' + json.dumps(key)[2:]
    return json.dumps(key)


@st.composite
def json_texts(draw: st.DrawFn, depth: int = 2) -> str:
    """A JSON text, mostly an object with the keys the presets read, written by hand."""
    kind = draw(st.sampled_from(["object", "object", "object", "value", "odd", "bad"]))
    if kind == "value":
        return draw(_json_values.flatmap(_dumped))
    if kind == "odd":
        return draw(st.sampled_from(_ODD_VALUES))
    if kind == "bad":
        return draw(st.sampled_from(_BAD_VALUES))
    members = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(_KEYS) | st.text(max_size=3))
        if depth > 0 and draw(st.booleans()):
            value = draw(json_texts(depth=depth - 1))
        else:
            value = draw(_json_values.flatmap(_dumped) | st.sampled_from(_ODD_VALUES))
        space = draw(st.sampled_from(["", " ", "\n\t"]))
        members.append(f"{_key_text(key, draw(st.booleans()))}{space}:{space}{value}")
    return "{" + ",".join(members) + "}"


_SPACES = st.sampled_from(["", " ", "\r\n", "\x0b", "\x0c", "\ufeff", "x"])


@settings(max_examples=300, deadline=None)
@given(json_texts(), _SPACES, _SPACES, st.integers(0, 5000))
def test_the_native_estimate_is_the_python_one(
    text: str, before: str, after: str, default: int
) -> None:
    body = (before + text + after).encode()
    got = _native.estimate_tokens(body, default)
    want = presets._estimate_slow(body, default)
    if got is not None:
        assert got == want
    preset = presets.openai(tpm=1000, default_max_tokens=default)
    assert preset.estimate_tokens(body) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_any_bytes_give_the_python_estimate_and_usage(body: bytes) -> None:
    assert presets.openai(tpm=1).estimate_tokens(body) == presets._estimate_slow(body, 4096)
    assert presets.usage_tokens(body) == presets._usage_slow(body)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """An answer's body: one JSON document, or a stream of events."""
    documents = draw(st.lists(json_texts(), min_size=1, max_size=3))
    if draw(st.booleans()):
        return (draw(_SPACES) + documents[0] + draw(_SPACES)).encode()
    ends = st.sampled_from(["\n\n", "\r\n\r\n", "\r\r", "\n"])
    events = [
        draw(st.sampled_from(["data:", "data: ", "event: x\ndata:", ": comment\ndata:\t"]))
        + document
        + draw(ends)
        for document in documents
    ]
    if draw(st.booleans()):
        events.append("data: [DONE]\n\n")
    return "".join(events).encode()


@settings(max_examples=300, deadline=None)
@given(answers())
def test_the_native_usage_is_the_python_one(body: bytes) -> None:
    sure, got = _native.usage_tokens(body)
    want = presets._usage_slow(body)
    if sure:
        assert got == want
    assert presets.usage_tokens(body) == want


def test_the_usual_texts_are_read_natively() -> None:
    """The bodies providers and SDKs send are answered by the native reading (the property
    tests would pass with a reading that is never sure)."""
    request = json.dumps(
        {
            "model": "m",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "caf\u00e9 \U0001f600 " * 10}],
        },
        ensure_ascii=False,
    ).encode()
    assert _native.estimate_tokens(request, 4096) == presets._estimate_slow(request, 4096) == 119
    for body, tokens in [
        (b'{"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}', 12),
        (b'{"type":"message","usage":{"input_tokens":9,"output_tokens":3}}', 12),
        (
            b'event: message_start\ndata: {"type": "message_start", "message": {"usage": '
            b'{"input_tokens": 30, "output_tokens": 1}}}\n\nevent: message_delta\ndata: '
            b'{"type": "message_delta", "usage": {"output_tokens": 12}}\n\n',
            42,
        ),
        (b'data: {"choices": []}\n\ndata: {"usage": {"total_tokens": 7}}\n\ndata: [DONE]\n\n', 7),
        (b"<html>busy</html>", None),
    ]:
        assert _native.usage_tokens(body) == (True, tokens)


def test_counts_are_ints_at_least_zero() -> None:
    """A bool, a float or a negative number is not a count: a request's is passed over (the
    next key, or the default), an answer's is not read (it used to settle at ``True`` or at
    -5, and raise when the body closed)."""
    openai = presets.openai(tpm=1000, default_max_tokens=50)
    assert openai.estimate_tokens(b'{"max_tokens": true, "max_completion_tokens": 7}') == 7
    assert openai.estimate_tokens(b'{"max_tokens": -5}') == 50
    assert openai.estimate_tokens(b'{"max_tokens": 5.0}') == 50
    assert presets.usage_tokens(b'{"usage": {"total_tokens": true}}') is None
    assert presets.usage_tokens(b'{"usage": {"total_tokens": -5, "input_tokens": 3}}') == 3


# -- resets ------------------------------------------------------------------------------------

_WALL = 1893456000.0


def _go_durations() -> st.SearchStrategy[str]:
    number = st.integers(0, 10**6).map(str)
    fraction = st.tuples(number, st.integers(0, 999)).map(lambda p: f"{p[0]}.{p[1]}")
    parts = st.tuples(
        st.none() | number.map(lambda n: n + "h"),
        st.none() | number.map(lambda n: n + "m"),
        st.none() | (number | fraction).map(lambda n: n + "s"),
        st.none() | (number | fraction).map(lambda n: n + "ms"),
    )
    return parts.map(lambda p: "".join(x for x in p if x is not None))


def _times() -> st.SearchStrategy[str]:
    when = st.datetimes(
        min_value=datetime.datetime(1600, 1, 1), max_value=datetime.datetime(2400, 1, 1)
    )
    fraction = st.sampled_from(["", ".123", ".000001", ".5", ".1234567"])
    zone = st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-11:59", "", "z", "+0100"])
    return st.tuples(when, fraction, zone).map(
        lambda p: p[0].strftime("%Y-%m-%dT%H:%M:%S") + p[1] + p[2]
    )


_RESETS = (
    _go_durations()
    | _times()
    | st.floats(0, 1e6).map(repr)
    | st.sampled_from(["7", "0", "1.", ".5", " 7", "1e3", "inf", "1_0", "6m", "1.5h", "5m5m"])
    | st.text(alphabet="0123456789.hms-:TZ+", max_size=12)
)


@settings(max_examples=300, deadline=None)
@given(_RESETS, st.sampled_from([bytes, str]))
def test_the_native_resets_are_parse_reset(value: str, kind: type) -> None:
    pairs: list[tuple[Any, Any]] = [
        ("x-ratelimit-remaining-requests", "1"),
        ("x-ratelimit-reset-requests", value),
    ]
    if kind is bytes:
        pairs = [(name.encode(), text.encode()) for name, text in pairs]
    [(_, _, _, got)] = _native.read_quotas(pairs, "openai", _WALL)
    assert got == presets.parse_reset(value, _WALL)

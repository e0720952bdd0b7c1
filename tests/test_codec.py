"""The one JSON codec (archlab.core): the run store and checkpoints write through it."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archlab.core import CodecError, decode, dumps, encode, loads

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats() | st.binary(max_size=5)
keys = st.text(max_size=4) | st.integers() | st.sampled_from(["$float", "$tuple", "$items", "$bytes"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=12)


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@given(values)
def test_exact_mode_round_trips_every_value(value):
    assert _same(loads(dumps(value, exact=True)), value)


def test_plain_mode_writes_what_any_json_reader_expects():
    assert encode({"shape": (1, 2), 3: "x"}) == {"shape": [1, 2], "3": "x"}
    assert loads(dumps({"loss": float("-inf")})) == {"loss": float("-inf")}
    # A mapping that would read as a tag is kept apart in both modes, so decoding is unambiguous.
    assert loads(dumps({"$float": "nan"})) == {"$float": "nan"}


def test_what_the_codec_cannot_have_written_is_refused_with_its_path():
    with pytest.raises(CodecError, match=r"value.best: \$float must be"):
        decode({"best": {"$float": "abc"}})
    with pytest.raises(CodecError, match=r"value: \$tuple must hold a list"):
        decode({"$tuple": 5})
    with pytest.raises(CodecError, match="not valid JSON"):
        loads('{"a": ')
    with pytest.raises(CodecError, match=r"state.fn: cannot encode a value of type builtin_function"):
        encode({"fn": len}, "state")

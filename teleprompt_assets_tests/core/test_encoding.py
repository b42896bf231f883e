import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.encoding import JsonTooDeep, json_depth, loads_bounded

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('ab"\\[]{}\n')),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k"[]\\', max_size=3), inner, max_size=3),
    max_leaves=20,
)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_depth_matches_the_structure_whatever_the_strings_hold(value):
    text = json.dumps(value)
    assert json_depth(text) == _depth(value)
    assert loads_bounded(text, max_depth=max(_depth(value), 1)) == value


def test_a_hundred_thousand_deep_array_is_refused_not_parsed():
    import eth_account  # noqa: F401  (raises the recursion limit to 100,000, as every signing process has)

    with pytest.raises(JsonTooDeep):
        loads_bounded("[" * 100_000 + "]" * 100_000)


def test_the_size_bound_comes_before_parsing():
    with pytest.raises(ValueError, match="over the limit"):
        loads_bounded(b"[" + b"1," * 1000 + b"1]", max_bytes=100)

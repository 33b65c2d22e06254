"""Fuzz ``config_from_json``, which every KFP component and Ray worker runs on ``config_json``.

Run by ``test_fuzz.py`` under a 2 GiB address-space limit; by hand:
``python tests/fuzz/fuzz_config_json.py --examples 2000 [--seed N]``. Every input must end in a
ConfigError or a valid config; a config that is accepted must come back unchanged from its own
JSON, since that is how it crosses every process boundary (docs/architecture.md).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from fuzz_run import fuzz_settings, parse_args, report
from hypothesis import example, given
from hypothesis import strategies as st

from graft.config import GraftConfig, config_from_json
from graft.errors import ConfigError

DEFAULT: dict[str, Any] = GraftConfig().model_dump(mode="json")
DEFAULT_JSON = json.dumps(DEFAULT)

tally: Counter[str] = Counter()


def _paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the config, sections and values alike."""
    if not isinstance(node, dict):
        return [prefix]
    below = [path for key, value in node.items() for path in _paths(value, (*prefix, key))]
    return [prefix, *below] if prefix else below


PATHS = _paths(DEFAULT)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included: Python's json reads and writes them
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e400", "builtin:digits", "s3://b/k?#", "auto"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# the edges of numbers: JSON has no NaN or infinity, but Python's json reads and writes them
edges = st.sampled_from([float("nan"), float("inf"), float("-inf"), 0, -1, 1e-320, 1e308, 2**63])
numbers = st.one_of(edges, st.floats(), st.integers(-(2**70), 2**70))


def near(default: object) -> st.SearchStrategy[object]:
    """Values a user could mean for a key: its own type first, then anything."""
    if isinstance(default, bool):
        own: st.SearchStrategy[object] = st.booleans()
    elif isinstance(default, int | float) or default is None:
        own = numbers
    elif isinstance(default, str):
        own = st.one_of(st.text(max_size=20), st.just(default.upper()))
    elif isinstance(default, list):
        own = st.lists(st.one_of(numbers, st.text(max_size=4)), max_size=4)
    else:
        own = json_values
    return st.one_of(own, own, json_values)


@st.composite
def real_keys_changed(draw: st.DrawFn) -> str:
    """The default config with a few of its real keys given other values."""
    data = json.loads(DEFAULT_JSON)
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=2)):
        node, default = data, DEFAULT
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):  # an earlier change made it a value
                node[key] = {}
            node, default = node[key], default[key]
        node[path[-1]] = draw(near(default[path[-1]]))
    return json.dumps(data)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Non-JSON and odd JSON: any text, a cut-off config, huge numbers, deep nesting."""
    kind = draw(st.sampled_from(["text", "cut", "digits", "nested"]))
    if kind == "text":
        return draw(st.text())
    if kind == "cut":
        return DEFAULT_JSON[: draw(st.integers(0, len(DEFAULT_JSON)))]
    if kind == "digits":  # past Python's 4300-digit limit on int() of a string
        return '{"seed": ' + "9" * draw(st.integers(4000, 6000)) + "}"
    depth = draw(st.integers(100, 200_000))
    return '{"data": ' + "[" * depth + "]" * depth + "}"


config_texts = st.one_of(
    real_keys_changed(), json_values.map(json.dumps), texts(), st.just(DEFAULT_JSON)
)


def check_one(text: str) -> None:
    tally["inputs tried"] += 1
    try:
        config = config_from_json(text)
    except ConfigError:
        tally["refused"] += 1
        return
    tally["accepted"] += 1
    sent = config.to_json()
    assert config_from_json(sent).to_json() == sent, f"{sent} does not come back from its JSON"


def main() -> int:
    args = parse_args(__doc__ or "")

    @fuzz_settings(args)
    @given(text=config_texts)
    @example(text="9" * 5000)
    @example(text="[" * 100_000)
    @example(text=json.dumps({**DEFAULT, "seed": float("nan")}))
    @example(text=json.dumps({**DEFAULT, "data": {**DEFAULT["data"], "val_fraction": "nan"}}))
    def fuzz_config_json(text: str) -> None:
        check_one(text)

    return report("fuzz config_json", fuzz_config_json, tally, args)


if __name__ == "__main__":
    sys.exit(main())

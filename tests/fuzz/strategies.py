"""Value strategies shared by the fuzz tests: plausible values mixed with the edges users hit (0, negatives,
NaN, inf, wrong types). Sizes stay below what would allocate gigabytes: those limits have their own tests."""

from __future__ import annotations

from hypothesis import strategies as st

# float flags as typed on a command line
EDGE_FLOATS = ("nan", "inf", "-inf", "0", "-0.0", "-1", "1e-12", "1e300")


def float_text(lo: float, hi: float) -> st.SearchStrategy[str]:
    """A float flag value: mostly in [lo, hi], sometimes an edge."""
    return st.one_of(
        st.floats(lo, hi, allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(EDGE_FLOATS),
    )


def int_text(*plausible: int) -> st.SearchStrategy[str]:
    """An int flag value: one of `plausible` or an edge (0, negative)."""
    return st.sampled_from((*plausible, 0, -1)).map(str)


# TOML literals for `--set key=VALUE` and for edited scenario or hardware files
EDGE_TOML = ("nan", "inf", "-inf", "-1", "0", "true", '"6"', '"x"', '"x[/y]"', "[1, 2]", "{}", "1e300")


def toml_number(lo: float, hi: float, integer: bool = False) -> st.SearchStrategy[str]:
    normal = st.integers(int(lo), int(hi)).map(str) if integer else st.floats(lo, hi, allow_nan=False).map(repr)
    return st.one_of(normal, normal, st.sampled_from(EDGE_TOML))


def toml_choice(*choices: str) -> st.SearchStrategy[str]:
    """A string setting: one of `choices` (quoted), a wrong word, or a wrong type."""
    return st.sampled_from((*(f'"{c}"' for c in choices), '"bogus"', "1", "true"))


@st.composite
def flags(draw, table: dict[str, st.SearchStrategy[str]], max_size: int = 4) -> list[str]:
    """A few `--name=value` flags drawn from `table`."""
    names = draw(st.lists(st.sampled_from(sorted(table)), unique=True, max_size=max_size))
    return [f"--{n}={draw(table[n])}" for n in names]


# JSON values that a config.json field might wrongly hold
JSON_EDGES = (
    float("nan"),
    float("inf"),
    -float("inf"),
    -1,
    0,
    1,
    7,
    2**63,
    1e30,
    0.5,
    True,
    False,
    None,
    "false",
    "12",
    [],
    [1],
    {},
)

"""Hypothesis strategies for how a retraction may spell the id it retracts.

`spellings(value)` draws from every form stride.domain.events accepts (case,
surrounding whitespace, braces, `urn:uuid:`, hyphens after any group of four
digits, none at all); `near_misses(value)` from strings that look alike but are
not accepted; `retracted_id_values()` from anything a JSON value may hold.
"""

from __future__ import annotations

from uuid import UUID

from hypothesis import strategies as st

WHITESPACE = " \t\n\r\f\v"
# Hyphen positions of the canonical 8-4-4-4-12 form, as "after group k of four digits".
CANONICAL_HYPHENS = frozenset({2, 3, 4, 5})


def render(digits: str, hyphens_after: frozenset[int]) -> str:
    """32 hex digits with a hyphen after each group of four named in `hyphens_after` (1..7)."""
    groups = [digits[4 * k : 4 * k + 4] for k in range(8)]
    return "".join(
        g + ("-" if k + 1 in hyphens_after and k < 7 else "") for k, g in enumerate(groups)
    )


@st.composite
def spellings(draw: st.DrawFn, value: UUID) -> str:
    """`value` in one of the accepted textual forms."""
    digits = value.hex
    case = draw(st.sampled_from(["lower", "upper", "mixed"]))
    if case == "upper":
        digits = digits.upper()
    elif case == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=32, max_size=32))
        digits = "".join(c.upper() if flip else c for c, flip in zip(digits, flips, strict=True))
    hyphens = draw(
        st.sampled_from([CANONICAL_HYPHENS, frozenset()])
        | st.frozensets(st.integers(min_value=1, max_value=7))
    )
    body = render(digits, hyphens)
    if draw(st.booleans()):
        body = "{" + body + "}"
    if draw(st.booleans()):
        body = "urn:uuid:" + body
    padding = st.text(alphabet=WHITESPACE, max_size=3)
    return draw(padding) + body + draw(padding)


# Edits that turn an accepted spelling into a rejected one.
_BREAKERS = (
    lambda s: s.strip(WHITESPACE)[:-1],
    lambda s: s.strip(WHITESPACE) + "0",
    lambda s: "-" + s.strip(WHITESPACE),
    lambda s: s.strip(WHITESPACE) + "-",
    lambda s: s.replace("-", "--", 1) if "-" in s else s + "g",
    lambda s: "{" + s.strip(WHITESPACE),
    lambda s: "URN:UUID:" + s.strip(WHITESPACE).removeprefix("urn:uuid:"),
    lambda s: "uuid:" + s.strip(WHITESPACE).removeprefix("urn:uuid:"),
    lambda s: s.strip(WHITESPACE) + "\u00a0",
    lambda s: "0x" + s.strip(WHITESPACE)[2:],
    lambda s: s.strip(WHITESPACE).replace("a", "g").replace("A", "G") + "g",
    lambda s: "{{" + s.strip(WHITESPACE) + "}}",
)


@st.composite
def near_misses(draw: st.DrawFn, value: UUID) -> str:
    """A string close to an accepted spelling of `value`, usually (not always) rejected."""
    spelled = draw(spellings(value))
    return draw(st.sampled_from(_BREAKERS))(spelled)


def storable_text(max_size: int = 50) -> st.SearchStrategy[str]:
    """Text PostgreSQL can store in jsonb (no NUL, no lone surrogates)."""
    return st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=max_size
    )


def retracted_id_values() -> st.SearchStrategy[object]:
    """Anything `retracted_event_id` may hold: spellings, near misses, text, other JSON."""
    uuids = st.uuids()
    return st.one_of(
        uuids.flatmap(spellings),
        uuids.flatmap(near_misses),
        storable_text(),
        st.sampled_from(["", " ", "{}", "urn:uuid:", "0" * 32, "0" * 31, "0" * 33]),
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.lists(uuids.map(str), max_size=2),
        st.dictionaries(st.just("id"), uuids.map(str), max_size=1),
    )

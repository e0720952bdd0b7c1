"""The `${...}` arithmetic evaluator: Python's precedence and semantics, and every failure a
SpecError (specs are untrusted data: nothing may crash, hang or reach `eval`)."""

from __future__ import annotations

import time

import pytest

from archlab.core import SpecError
from archlab.spec import evaluate


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left-associative
        ("2 * 3 ** 2", 18),  # ** binds tighter than *
        ("2 ** 3 ** 2", 512),  # right-associative: 2 ** 9
        ("-2 ** 2", -4),  # unary minus binds looser than **, as in Python
        ("(-2) ** 2", 4),
        ("2 ** -1", 0.5),  # the exponent may carry a sign
        ("-3 // 2", -2),  # floor division floors toward -inf
        ("7 // 2", 3),
        ("-7 % 3", 2),  # Python's modulo takes the sign of the divisor
        ("7 / 2", 3.5),
        ("6 / 3", 2.0),  # true division is always a float
        ("7.5 // 2", 3.0),
        ("--3", 3),
        ("+-3", -3),
        ("1e3", 1000.0),
        (".5 * 4", 2.0),
        ("min(3, 1, 2)", 1),
        ("max(width // 2, 8)", 16),
        ("int(7 / 2)", 3),
        ("round(2.5)", 2),  # banker's rounding, as in Python
        ("round(3.14159, 2)", 3.14),
        ("abs(-4)", 4),
        ("2 ** i * 16", 128),
        ("max(min(width, 100), 1) + depth", 35),
    ],
)
def test_values_match_python(text: str, expected: object) -> None:
    names = {"width": 32, "depth": 3, "i": 3}
    got = evaluate(text, names)
    assert got == expected
    assert type(got) is type(expected)
    # Wherever the text is also valid Python, the evaluator agrees with Python itself.
    assert got == eval(text, {"min": min, "max": max, "int": int, "round": round, "abs": abs}, names)


def test_int_stays_int_and_float_stays_float() -> None:
    assert isinstance(evaluate("4 // 2", {}), int)
    assert isinstance(evaluate("4 / 2", {}), float)
    assert isinstance(evaluate("x * 2", {"x": 1.5}), float)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("width * 2", "unknown var 'width'"),
        ("sqrt(4)", "unknown function 'sqrt'"),
        ("__import__('os')", "cannot read"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("1.0 / 0.0", "division by zero"),
        ("0 ** -1", "0 ** (-1)"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e999", "too large"),
        ("int(1e999)", "too large"),
        ("10 ** 400 * 1.0", "int too large to convert to float"),
        ("10 ** 400 / 3", "too large"),
        ("1e200 * 1e200", "not finite"),
        ("10.0 ** 400", "10.0 ** 400"),
        ("1 +", "unexpected end"),
        ("(1 + 2", "expected ')'"),
        ("1 + 2)", "unexpected ')'"),
        ("1 2", "unexpected '2'"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1 $ 2", "cannot read '$ 2'"),
        ("a.b", "cannot read"),
        ("[1]", "unexpected '['"),  # brackets only index a list var: stages[i]
        ("'x'", "cannot read"),
        ("min()", "unexpected ')'"),
        ("min(1)", "min() failed"),
        ("abs(1, 2)", "abs() failed"),
        ("name + 1", "'+' needs numbers"),
        ("-name", "'-' needs numbers"),
        ("max(name, 1)", "'max' needs numbers"),
        ("flag * 2", "'*' needs numbers"),  # booleans are not numbers here
        ("(" * 60 + "1" + ")" * 60, "nesting deeper"),
        ("-" * 100 + "1", "nesting deeper"),
    ],
)
def test_errors_are_spec_errors(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        evaluate(text, {"name": "relu", "flag": True})
    message = str(info.value)
    assert fragment in message
    assert "in expression" in message  # every message quotes the expression


def test_unknown_var_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown var 'widht' \(known: depth, width\)"):
        evaluate("widht", {"width": 1, "depth": 2})


@pytest.mark.parametrize(
    "text",
    ["2 ** 10 ** 10", "9 ** 9 ** 9", "2 ** 2 ** 2 ** 2 ** 2", "(2 ** 4000) ** 2",
     "2 ** 4000 * 2 ** 4000", "2.0 ** -5000", "10 ** 100000"],
)
def test_huge_results_are_refused_quickly(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError):
        evaluate(text, {})
    assert time.perf_counter() - start < 0.5


def test_large_but_reasonable_powers_work() -> None:
    assert evaluate("2 ** 62", {}) == 2**62
    assert evaluate("2 ** 1000", {}) == 2**1000
    assert evaluate("2 ** 0.5", {}) == pytest.approx(2**0.5)


def test_names_may_hold_any_value_but_arithmetic_needs_numbers() -> None:
    assert evaluate("act", {"act": "gelu"}) == "gelu"
    assert evaluate("sizes", {"sizes": (1, 2)}) == (1, 2)


# ------------------------------------------------- every operation's cost is bounded


def test_round_with_a_huge_ndigits_is_refused_not_computed() -> None:
    # round(5, -10**9) would compute 10 ** 10**9: it used to run for ever.
    for text in ("round(5, -1000000000)", "round(5, -10 ** 7)", "round(2.5, 10 ** 9)"):
        with pytest.raises(SpecError, match=r"round\(\): ndigits .* is out of range"):
            evaluate(text, {})
    assert evaluate("round(12345, -2)", {}) == 12300


def test_a_5000_digit_literal_is_a_spec_error() -> None:
    # int() itself refuses beyond 4,300 digits with a ValueError.
    with pytest.raises(SpecError, match=r"the 5000-digit number .* is too large") as info:
        evaluate("9" * 5000 + " + 1", {})
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("text", ["w + 1", "w * 2", "-w", "min(w, 3)", "w // 1", "w % 7"])
def test_huge_vars_from_the_dict_api_give_a_readable_error(text: str) -> None:
    # str() of a 5,001-digit integer raises ValueError: the message must not try it.
    with pytest.raises(SpecError, match=r"var 'w' is too large \(<a 5001-digit integer>") as info:
        evaluate(text, {"w": 10**5000})
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("text", ["2 ** 4000 * 2 ** 100", "2 ** 4096 + 2 ** 4096", "2 ** 4000 * 2 ** 4000"])
def test_results_are_bounded_whatever_the_operation(text: str) -> None:
    with pytest.raises(SpecError, match="too large"):
        evaluate(text, {})


def test_a_non_number_operand_is_quoted_briefly() -> None:
    with pytest.raises(SpecError, match=r"needs numbers, got \[0, 1, 2, 3, 4, 5, \.\.\. \(1000 items\)\]"):
        evaluate("x + 1", {"x": list(range(1000))})


def test_a_refused_product_names_its_operands_briefly() -> None:
    names = {"v": 2**3000}
    with pytest.raises(SpecError, match=r"^<a 904-digit integer> \* <a 904-digit integer> is too large") as info:
        evaluate("v * v", names)
    assert len(str(info.value)) < 200

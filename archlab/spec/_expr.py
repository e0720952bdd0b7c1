"""A tiny arithmetic evaluator for `${...}` expressions in specs.

Specs are data, so expressions are never handed to Python's `eval`. This module tokenises
and parses a small grammar itself:

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/' | '//' | '%') unary)*
    unary := ('-' | '+') unary | power
    power := atom ('**' unary)?          # right-associative; -2 ** 2 == -4, as in Python
    atom  := NUMBER | NAME ('[' expr ']')* | NAME '(' expr (',' expr)* ')' | '(' expr ')'

Names are looked up in the vars; a var that is a list is indexed with `[i]` (from 0;
negative indices count from the end, as in Python), so `${stages[stage]}` reads the
depth of the current stage. The only functions are min, max, int, round, abs and len.

Every operation's cost is bounded, because a spec is untrusted data: integers (literals,
vars, operands and results) have at most MAX_EXPR_BITS (4,096) bits, so no `**`, `*` or
`round(5, -10**9)` can run for long, and a result is always printable; nesting is bounded
too (the parser is recursive descent).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..core import SpecError, brief
from ._limits import MAX_EXPR_BITS

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_]\w*)|(?P<op>\*\*|//|[-+*/%(),\[\]]))"
)

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "int": int,
    "round": round,
    "abs": abs,
    "len": len,
}

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
}

# A `**` whose result would need more bits than this is refused: specs are untrusted data,
# and `2 ** 10 ** 10` must not hang the process.
_MAX_POW_BITS = MAX_EXPR_BITS
# The most decimal digits an integer of MAX_EXPR_BITS bits has.
_MAX_DIGITS = int(MAX_EXPR_BITS * 0.30103) + 1
# round(x, n) with |n| beyond this would compute 10 ** |n|: refused.
_MAX_NDIGITS = _MAX_DIGITS
# Parentheses and unary signs nested deeper than this are refused rather than exhausting
# Python's recursion limit (the parser is recursive descent).
_MAX_NESTING = 50


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SpecError(f"cannot read {brief(text[pos:].strip())} in expression {brief(text)}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, names: Mapping[str, Any]):
        self.text = text
        self.names = names
        self.tokens = _tokenize(text)
        self.i = 0
        self.nesting = 0

    def fail(self, why: str) -> SpecError:
        return SpecError(f"{why} in expression {brief(self.text)}")

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise self.fail("unexpected end" + (f", expected {expected!r}" if expected else ""))
        tok = self.tokens[self.i]
        if expected is not None and tok[1] != expected:
            raise self.fail(f"expected {expected!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        if not self.tokens:
            raise self.fail("empty expression")
        value = self.expr()
        if self.i != len(self.tokens):
            raise self.fail(f"unexpected {self.peek()!r}")
        return value

    def expr(self) -> Any:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            value = self.apply(op, value, self.term())
        return value

    def term(self) -> Any:
        value = self.unary()
        while self.peek() in ("*", "/", "//", "%"):
            op = self.take()[1]
            value = self.apply(op, value, self.unary())
        return value

    def unary(self) -> Any:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise self.fail(f"nesting deeper than {_MAX_NESTING} levels")
        try:
            if self.peek() in ("-", "+"):
                op = self.take()[1]
                value = self.unary()
                self.check_number(value, op)
                return -value if op == "-" else value
            return self.power()
        finally:
            self.nesting -= 1

    def power(self) -> Any:
        base = self.atom()
        if self.peek() == "**":
            self.take()
            return self.apply("**", base, self.unary())
        return base

    def atom(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            if not any(c in text for c in ".eE"):
                if len(text.lstrip("0")) > _MAX_DIGITS:  # int() itself refuses 4,300 digits
                    raise self.fail(f"the {len(text)}-digit number {brief(text)} is too large "
                                    f"(integers have at most {MAX_EXPR_BITS} bits)")
                return self.bounded(int(text), "number")
            if not math.isfinite(value := float(text)):
                raise self.fail(f"number {text} is too large")
            return value
        if kind == "name":
            if self.peek() == "(":
                return self.call(text)
            if text not in self.names:
                raise self.fail(f"unknown var {text!r} (known: {', '.join(sorted(self.names)) or 'none'})")
            value, what = self.names[text], f"var {text!r}"
            while self.peek() == "[":
                value, what = self.index(value, what), f"{what}[...]"
            return self.bounded(value, what)
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        raise self.fail(f"unexpected {text!r}")

    def index(self, value: Any, what: str) -> Any:
        """`value[i]` for a list var; the index is any expression giving a whole number."""
        self.take("[")
        i = self.expr()
        self.take("]")
        if not isinstance(value, list | tuple):
            raise self.fail(f"{what} is {brief(value)}, not a list, so it cannot be indexed")
        if isinstance(i, bool) or not isinstance(i, int):
            raise self.fail(f"an index into {what} must be a whole number. Received: {brief(i)}")
        if not -len(value) <= i < len(value):
            raise self.fail(f"index {i} is out of range for {what}, which has {len(value)} items "
                            f"(0 to {len(value) - 1})")
        return value[i]

    def call(self, name: str) -> Any:
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r} (allowed: {', '.join(FUNCTIONS)})")
        self.take("(")
        args = [self.expr()]
        while self.peek() == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        if name == "len":
            if len(args) != 1 or not isinstance(args[0], list | tuple):
                raise self.fail(f"len() takes one list var. Received: {', '.join(brief(a) for a in args)}")
            return len(args[0])
        for a in args:
            self.check_number(a, name)
        if name == "round" and len(args) == 2 and isinstance(args[1], int) and abs(args[1]) > _MAX_NDIGITS:
            raise self.fail(f"round(): ndigits {_show(args[1])} is out of range "
                            f"(-{_MAX_NDIGITS} to {_MAX_NDIGITS})")
        try:
            return self.bounded(FUNCTIONS[name](*args), f"{name}()")
        except (TypeError, ValueError, OverflowError) as e:
            raise self.fail(f"{name}() failed: {e}") from None

    def check_number(self, value: Any, op: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{op!r} needs numbers, got {brief(value)}")

    def bounded(self, value: Any, what: str) -> Any:
        """`value`, unless it is an integer of more than MAX_EXPR_BITS bits."""
        if isinstance(value, int) and value.bit_length() > MAX_EXPR_BITS:
            raise self.fail(f"{what} is too large ({_show(value)}; integers have at most "
                            f"{MAX_EXPR_BITS} bits)")
        return value

    def apply(self, op: str, a: Any, b: Any) -> Any:
        self.check_number(a, op)
        self.check_number(b, op)
        if op in ("/", "//", "%") and b == 0:
            raise self.fail("division by zero")
        if op == "**":
            if isinstance(a, int) and isinstance(b, int) and b > 0:
                if max(a.bit_length(), 1) * b > _MAX_POW_BITS:
                    raise self.fail(f"{_show(a)} ** {_show(b)} is too large")
            elif abs(b) > 1024:
                raise self.fail(f"exponent {_show(b)} is too large")
        if op == "*" and isinstance(a, int) and isinstance(b, int):
            if a.bit_length() + b.bit_length() > _MAX_POW_BITS:
                raise self.fail(f"{_show(a)} * {_show(b)} is too large")
        try:
            result = a**b if op == "**" else _BINARY[op](a, b)
        except (OverflowError, ZeroDivisionError) as e:  # 10 ** 400 * 1.0, 0 ** -1
            raise self.fail(f"{_show(a)} {op} {_show(b)}: {e}") from None
        if isinstance(result, complex):  # (-8) ** 0.5
            raise self.fail(f"{_show(a)} {op} {_show(b)} is not a real number")
        if isinstance(result, float) and not math.isfinite(result):
            raise self.fail(f"{_show(a)} {op} {_show(b)} is not finite")
        return self.bounded(result, f"{_show(a)} {op} {_show(b)}")


def _show(v: Any) -> str:
    """An operand for an error message: negative ones in parentheses, huge ones abridged."""
    text = brief(v)
    if len(text) > 30:
        text = f"<a {len(text)}-digit number>" if text.lstrip("-").isdigit() else text[:27] + "..."
    return f"({text})" if text.startswith("-") else text


def evaluate(text: str, names: Mapping[str, Any]) -> Any:
    """Evaluate an arithmetic expression over `names`.

    >>> evaluate("2 ** i * 16", {"i": 3})
    128
    >>> evaluate("max(width // 2, 8)", {"width": 12})
    8
    >>> evaluate("stages[i] * 2", {"stages": (3, 4, 6, 3), "i": 2}), evaluate("len(s)", {"s": (1, 2)})
    (12, 2)
    """
    return _Parser(text, names).parse()

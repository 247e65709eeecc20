"""The mini-world cards' gates: a measured value against a bound, its verdict, its card row.

The model card (`anti_i2v.world.card`) and the identity judge's card (`anti_i2v.world.identity_card`)
each hold a table of gates, name -> (operator, bound); both judge and print them here.
"""

from __future__ import annotations

import operator

OPERATORS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def passes(value: float, op: str, bound: float) -> bool:
    """Whether `value op bound` holds (`op` one of `OPERATORS`)."""
    return bool(OPERATORS[op](value, bound))


def gate_row(name: str, value: float, op: str, bound: float, passed: bool) -> str:
    """One gate as a Markdown table row: measure, value, gate, verdict."""
    return f"| {name} | {value:.3f} | {op} {bound} | {'pass' if passed else '**fail**'} |"

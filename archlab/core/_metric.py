"""How archlab writes a metric value, in tables, reports, progress lines and rules.

One format everywhere, so the same number reads the same in the terminal, the HTML report
and a search's progress: four decimals below 1,000 (accuracies, losses, gaps, milliseconds),
a thousands-separated integer from there up (parameter and FLOP counts used as objectives).
"""

from __future__ import annotations

import math


def format_metric(value: float | None, *, sign: bool = False, missing: str = "-") -> str:
    """A metric value as archlab prints it; `sign` writes + before positive values (gaps).

    >>> format_metric(0.98765), format_metric(-0.5, sign=True), format_metric(0.01, sign=True)
    ('0.9877', '-0.5000', '+0.0100')
    >>> format_metric(123456.7), format_metric(None), format_metric(float("nan"))
    ('123,457', '-', 'nan')
    """
    if value is None:
        return missing
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    plus = "+" if sign else ""
    return f"{value:{plus},.0f}" if abs(value) >= 1000 else f"{value:{plus}.4f}"

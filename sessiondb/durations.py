"""Parse retention durations such as ``30d``, ``12h`` and ``90m``."""

from __future__ import annotations

import re
from datetime import timedelta

# [0-9], not \d: \d also matches other scripts' digits ("٣d"), which int() would quietly accept.
_DURATION = re.compile(r"([0-9]+)([dhms])")
_MAX_DIGITS = 12  # beyond any retention window, and well inside what timedelta can hold in seconds
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: object) -> timedelta:
    """``"30d"`` -> ``timedelta(days=30)``; also ``h``, ``m`` (minutes) and ``s``. Must be positive.

    One number and one unit, no spaces or signs: a retention window is typed by hand into cron lines,
    and anything looser (``30``, ``1.5d``, ``-2h``, ``30 days``) is more likely a mistake than intent.
    """
    if not isinstance(text, str):
        raise TypeError(f"duration must be a string like '30d', got {type(text).__name__}")
    match = _DURATION.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"invalid duration {shown!r}: expected a whole number and a unit, like 30d, 12h or 90m")
    digits, unit = match.group(1), match.group(2)
    too_large = f"invalid duration {text[:40]!r}: far too large for a retention window"
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise ValueError(too_large)
    amount = int(digits)
    if amount == 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    try:
        return timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise ValueError(too_large) from None

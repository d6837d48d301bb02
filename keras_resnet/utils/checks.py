"""Argument checks, written once: each raises the usual message naming the argument, the value
received and what is allowed, and returns the value so that a check reads as one line.

    >>> check_int("epochs", 30, minimum=1)
    30
    >>> check_choice("variant", "v2", ("v1.5", "preact", "plain"))
    Traceback (most recent call last):
    ValueError: `variant` must be one of ('v1.5', 'preact', 'plain'). Received: variant='v2'
"""

import math
import numbers


def _fail(name, value, allowed, error=ValueError):
    raise error(f"`{name}` must be {allowed}. Received: {name}={value!r}")


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name, value, minimum=None, maximum=None, *, none_ok=False):
    """An integer (not a bool) within [minimum, maximum]; None if `none_ok`."""
    if value is None and none_ok:
        return None
    if not is_int(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        allowed = "an integer"
        if minimum is not None and maximum is not None:
            allowed += f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            allowed = {0: "an integer >= 0", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        elif maximum is not None:
            allowed += f" <= {maximum}"
        _fail(name, value, allowed + (", or None" if none_ok else ""))
    return int(value)


def check_number(name, value, low=None, high=None, *, low_open=False, high_open=False, none_ok=False):
    """A finite real number (not a bool, not inf or nan) in the interval given by `low`/`high` (closed
    unless `*_open`)."""
    if value is None and none_ok:
        return None
    bad = not is_number(value) or not math.isfinite(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        if low is not None and high is not None:
            allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            allowed = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            allowed = "a finite number"
        _fail(name, value, allowed + (", or None" if none_ok else ""))
    return value


def check_choice(name, value, choices):
    """One of `choices` (compared by equality, so unhashable values get the same clear message)."""
    choices = tuple(choices)
    if not any(_same(value, c) for c in choices):
        _fail(name, value, f"one of {choices!r}")
    return value


def _same(value, choice):
    """Equal and of the same kind: 1 is not True, "1" is not 1, a NumPy integer 2 is 2."""
    if isinstance(value, bool) != isinstance(choice, bool) or (value is None) != (choice is None):
        return False
    if isinstance(choice, numbers.Number):
        return isinstance(value, numbers.Number) and value == choice
    return isinstance(value, type(choice)) and value == choice


def check_bool(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "True or False", TypeError)
    return value


def check_int_tuple(name, value, lengths, minimum=1):
    """A list or tuple of `lengths` (a set of allowed lengths) integers >= `minimum`, as a tuple."""
    if not isinstance(value, (list, tuple)) or len(value) not in lengths or not all(
            is_int(v) and v >= minimum for v in value):
        counts = " or ".join(str(n) for n in sorted(lengths))
        _fail(name, value, f"a list of {counts} integers >= {minimum}")
    return tuple(int(v) for v in value)

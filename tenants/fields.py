"""Parsing helpers shared by the schemas: turn form strings or JSON values into clean values, or an error message.

Each ``as_*`` function returns the clean value or raises :class:`Invalid` with a message fit to show beside the field.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse


class Invalid(ValueError):
    """A field's value is unusable; the message says why, for the person who typed it."""


def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == [] or value == {}


def as_text(value: Any, max_length: int = 500) -> str:
    if not isinstance(value, str):
        raise Invalid("Enter text.")
    value = value.strip()
    if len(value) > max_length:
        raise Invalid(f"Use at most {max_length} characters.")
    return value


def as_url(value: Any) -> str:
    value = as_text(value, 2000)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise Invalid("Enter a full http:// or https:// URL.")
    return value


MAX_LIST_ITEMS = 10000  # names in one list (allowed users, admins, scopes...); a university's roll fits


def as_list(value: Any, max_items: int = MAX_LIST_ITEMS) -> list[str]:
    """A list of non-empty strings, from a JSON list or a string of items separated by commas or new lines.

    Duplicates are dropped keeping the first; linear in the input (a pasted roll of 100,000 names answers at once).
    """
    if isinstance(value, str):
        items = re.split(r"[,\n]", value)
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise Invalid("Enter a list of names.")
        items = list(value)
    else:
        raise Invalid("Enter a list of names, one per line.")
    cleaned: dict[str, None] = {}
    for item in (i.strip() for i in items):
        if item:
            if len(item) > 255:
                raise Invalid("Each name may have at most 255 characters.")
            cleaned[item] = None
            if len(cleaned) > max_items:
                raise Invalid(f"Enter at most {max_items} names.")
    return list(cleaned)


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "off", "false", "0", "no"):
        return False
    raise Invalid("Choose yes or no.")


MAX_NUMBER = 10**9  # more than any count, CPU or number of seconds the console configures


def as_number(value: Any, minimum: float = 0, integer: bool = False, maximum: float = MAX_NUMBER) -> float | int:
    if isinstance(value, bool):
        raise Invalid("Enter a number.")
    if isinstance(value, str) and len(value.strip()) > 30:
        raise Invalid(f"Use {maximum:,} or less.")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError, OverflowError):
        raise Invalid("Enter a whole number." if integer else "Enter a number.") from None
    if integer and isinstance(value, float) and value != int(value):
        raise Invalid("Enter a whole number.")
    if number != number or number in (float("inf"), float("-inf")):
        raise Invalid("Enter a number.")
    if number < minimum:
        raise Invalid(f"Use {minimum:g} or more.")
    if number > maximum:
        raise Invalid(f"Use {maximum:,} or less.")
    return int(number) if integer else (int(number) if float(number).is_integer() else number)


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
MAX_BYTES = 1000 * 10**12
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$")


def as_quantity(value: Any) -> str:
    """A Kubernetes-style byte quantity such as ``512M``, ``2G`` or ``10Gi``, normalised without spaces."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not (match := _QUANTITY.match(value)):
        raise Invalid("Enter a size such as 512M, 2G or 10Gi.")
    number, unit = match.group(1), match.group(2) or ""
    if float(number) <= 0:
        raise Invalid("Use a size above zero.")
    if float(number) * _UNITS[unit] > MAX_BYTES:
        raise Invalid("Use a size of at most 1000T.")
    return f"{number}{unit}"


def quantity_bytes(quantity: str) -> float:
    match = _QUANTITY.match(quantity)
    return float(match.group(1)) * _UNITS[match.group(2) or ""]

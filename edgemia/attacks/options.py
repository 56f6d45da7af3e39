"""Attack options: settings such as LiRA's variance or RMIA's gamma, given as KEY=VALUE.

A key is `<family>.<option>`, where the family is the attack name without
its `-online` or `-offline` suffix, so that `lira.variance=fixed` applies to
both LiRA attacks. Each attack module declares its options with their
defaults; parse_attack_options checks the keys and values and fills in
every default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgemia.errors import InputError


@dataclass(frozen=True)
class AttackOption:
    """One setting of an attack family: its default, its parser and a line of help."""

    default: object
    parse: Callable[[str], object]  # raises ValueError with a message naming the expected values
    help: str


def choice(*values: str) -> Callable[[str], str]:
    """Return a parser that accepts exactly one of `values`."""

    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        return text

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a finite number above 0")
    return value


def unit_interval_or(keyword: str) -> Callable[[str], float | str]:
    """Return a parser that accepts `keyword` or a number in [0, 1]."""

    def parse(text: str) -> float | str:
        if text == keyword:
            return keyword
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected '{keyword}' or a number in [0, 1]") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"expected '{keyword}' or a number in [0, 1]")
        return value

    return parse


def parse_attack_options(
    items: list[str], families: dict[str, dict[str, AttackOption]]
) -> dict[str, dict[str, object]]:
    """Parse KEY=VALUE items into {family: {option: value}}, with every default filled in.

    Raises InputError for a malformed item, an unknown family or option, an
    invalid value, or a key given twice.
    """
    options = {family: {name: option.default for name, option in declared.items()} for family, declared in families.items()}
    seen = set()
    valid_keys = [f"{family}.{name}" for family, declared in families.items() for name in declared]
    for item in items:
        key, separator, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not separator or "." not in key:
            raise InputError(
                f"attack option '{item}' is not KEY=VALUE with KEY as <attack>.<option>; "
                f"valid keys: {', '.join(valid_keys)}"
            )
        family, name = key.split(".", 1)
        if family not in families or name not in families[family]:
            raise InputError(f"unknown attack option '{key}'; valid keys: {', '.join(valid_keys)}")
        if key in seen:
            raise InputError(f"attack option '{key}' is given more than once")
        seen.add(key)
        try:
            options[family][name] = families[family][name].parse(text)
        except ValueError as exc:
            raise InputError(f"attack option {key}={text!r} is invalid: {exc}") from None
    return options

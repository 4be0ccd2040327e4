"""User-facing errors and the one place that turns them into a clean exit.

A :class:`SegbenchError` is a problem with the user's input (params, data, paths, model names):
it is printed as one plain line and the process exits with status 2, with no traceback.
Anything else is a bug in segbench and keeps its traceback.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

USER_ERROR_EXIT = 2


class SegbenchError(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""


def exit_on_user_error(main: F) -> F:
    """Decorate a command-line ``main``: a :class:`SegbenchError` -> ``error: ...``, exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SegbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def describe_validation_error(exc, *, prefix: str = "", errors: list[dict] | None = None) -> str:
    """One line naming every bad dotted key of a pydantic ``ValidationError`` and why.

    ``prefix`` is prepended to each location (e.g. ``"models.unet"``); ``errors`` replaces
    ``exc.errors()`` (a caller may clean the locations first). Cross-field validators raise
    ``ValueError("<key>: <why>")`` so that their key joins the location too. Required keys that
    are missing are grouped by the section they belong to.
    """
    parts, missing = [], {}
    for err in exc.errors() if errors is None else errors:
        loc = [str(p) for p in (prefix, *err["loc"]) if p != ""]
        msg = err["msg"].removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and _KEY.fullmatch(head):
            parts.append(f"{'.'.join([*loc, head])}: {rest}")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{'.'.join(loc)}: unknown key (remove it or check its spelling)")
        elif err["type"] == "missing":
            missing.setdefault(".".join(loc[:-1]), []).append(loc[-1])
        else:
            parts.append(f"{'.'.join(loc)}: {msg} (got {err.get('input')!r})")
    for section, keys in missing.items():
        where = f"{section}: " if section else ""
        parts.append(
            f"{where}missing key{'s' if len(keys) > 1 else ''} {', '.join(keys)} (every key "
            "is set in the params file; the shipped params.yaml lists them all)"
        )
    return "; ".join(parts)


_KEY = re.compile(r"[a-z_][a-z0-9_.]*")

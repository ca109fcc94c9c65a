"""The bottom floor: flag lists, numbers and shell quoting, and how the run layer stops (Stop).

A fairseq-train argument list is read as fairseq reads it (``--name value`` or ``--name=value``, the last one
wins); every numeric setting must be a finite number (``check_finite``), except where inf has a documented
meaning. The standard library only.
"""

import datetime
import math
import re
from typing import List, Optional, Sequence


# Flags where inf has a documented meaning (an unconstrained FreeLB ball).
INF_ALLOWED = ("--freelb-max-norm",)


class Stop(Exception):
    """Stops the launcher: ``message`` on stderr, exit ``status``; ``usage`` adds the recipe's usage (a wrong
    invocation)."""

    def __init__(self, message: str, status: int = 2, usage: bool = False):
        super().__init__(message)
        self.status = status
        self.usage = usage


def die(message: str):
    raise Stop(message, usage=True)


def fail(message: str):
    raise Stop(message)


NUMBER = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


def is_number(text: str) -> bool:
    """A finite non-negative decimal number (no sign, nan, inf, 1e400 or garbage)."""
    return bool(NUMBER.match(text)) and math.isfinite(float(text))


def is_int(text: str) -> bool:
    return bool(re.match(r"^[1-9][0-9]*$", text))


def same_value(a: str, b: str) -> bool:
    """The same word, or the same finite number (1.0 and 1, 1e-5 and 0.00001)."""
    return a == b or (is_number(a) and is_number(b) and float(a) == float(b))


def json_value(text: str):
    """A table or environment value as run.json records it: a number when it is one, inf as Infinity."""
    if re.match(r"^-?(0|[1-9][0-9]*)$", text):
        return int(text)
    if text == "inf" or re.match(r"^-?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$", text) or NUMBER.match(text):
        return float(text)
    return text


def words(text: str) -> List[str]:
    """ "a,b c" -> ["a", "b", "c"] (lists are accepted with commas, spaces or both)."""
    return text.replace(",", " ").split()


def flag_value(flags: Sequence[str], name: str) -> Optional[str]:
    """The value the last ``name VALUE`` or ``name=VALUE`` in ``flags`` gives (what argparse keeps), or None."""
    value = None
    for i, item in enumerate(flags):
        if item == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif item.startswith(name + "="):
            value = item[len(name) + 1:]
    return value


def has_flag(flags: Sequence[str], name: str) -> bool:
    return any(item == name or item.startswith(name + "=") for item in flags)


def check_finite(flags: Sequence[str], where: str) -> None:
    """Refuses a flag whose value, or an item of whose list or tuple, is NaN or infinite (``--lr nan``,
    ``--r3f-lambda=inf``, ``--lr 1e400``, ``--adam-betas "(0.9,nan)"``): fairseq takes most of them and trains on
    them (a tuple it evaluates as Python, where nan is a NameError)."""
    for i, item in enumerate(flags):
        if not item.startswith("--"):
            continue
        name, sep, value = item.partition("=")
        if not sep:
            if i + 1 >= len(flags):
                continue
            value = flags[i + 1]
        for part in value.strip().strip("()[]").split(","):
            try:
                number = float(part)
            except ValueError:
                continue
            if math.isnan(number) or (math.isinf(number) and name not in INF_ALLOWED):
                fail(f"{name} {value} ({where}): give " + ("a finite number" if part.strip() == value.strip() else
                                                           "finite numbers"))


_BASH_SPECIAL = set(" \t\n'\"\\|&;()<>!{}*[]?^$`,")


def bash_quote(text: str) -> str:
    """``printf %q`` of bash: how the recipes have always printed a dry run's commands."""
    if text == "":
        return "''"
    if any(not c.isprintable() and c not in "\t\n" for c in text) or "\n" in text or "\t" in text:
        return "$'" + text.encode("unicode_escape").decode().replace("'", "\\'") + "'"
    out = []
    for i, c in enumerate(text):
        if c in _BASH_SPECIAL or (c == "~" and (i == 0 or text[i - 1] in "=:")) or (c == "#" and i == 0):
            out.append("\\")
        out.append(c)
    return "".join(out)


def quoted(command: Sequence[str]) -> str:
    return "".join(bash_quote(part) + " " for part in command)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"

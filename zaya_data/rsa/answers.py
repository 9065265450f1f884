"""Final answers: extraction from a solution, a cheap agreement key, and equivalence.

Agreement between candidates (stratification, unanimity) uses a normalized string key:
it is cheap, deterministic and exact for the answers rollouts actually repeat ("420" vs
"420"). Correctness against a reference uses `math_verify`, which understands that
"\\frac{1}{2}" and "0.5" are the same number.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

# math_verify warns once when its signal-based timeouts are off; off-main-thread calls
# (teacher threads, Ray actors) must turn them off, and the warning is noise there.
logging.getLogger("math_verify.parser").setLevel(logging.ERROR)
logging.getLogger("math_verify.grader").setLevel(logging.ERROR)


def _timeout() -> int | None:
    """math_verify's timeouts use SIGALRM, which only the main thread may set."""
    return 5 if threading.current_thread() is threading.main_thread() else None

_BOXED = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces
    matched; None when there is none or its braces never close."""
    best: tuple[int, str] | None = None
    for macro in _BOXED:
        start = text.rfind(macro + "{")
        if start < 0 or (best is not None and start < best[0]):
            continue
        i = start + len(macro) + 1
        depth = 1
        j = i
        while j < len(text):
            c = text[j]
            if c == "\\" and j + 1 < len(text):
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    best = (start, text[i:j])
                    break
            j += 1
    return None if best is None else best[1].strip()


_SPACE = re.compile(r"\s+")
_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$")


def answer_key(answer: str | None) -> str:
    """A normalized form used to group answers that agree ("" for no answer)."""
    if answer is None:
        return ""
    s = _DROP.sub("", answer)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACE.sub("", s)
    s = s.rstrip(".")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[6:-1]
    return s


@lru_cache(maxsize=65536)
def _parsed(answer: str) -> tuple:
    from math_verify import parse

    wrapped = answer if "\\boxed" in answer or "$" in answer else f"${answer}$"
    return tuple(parse(wrapped, parsing_timeout=_timeout()))


@lru_cache(maxsize=65536)
def answers_equivalent(reference: str, answer: str) -> bool:
    """True when `answer` is mathematically equal to `reference` (math_verify), or
    their normalized strings are equal (symbolic answers math_verify cannot parse)."""
    if answer_key(reference) == answer_key(answer) and answer_key(answer):
        return True
    from math_verify import verify

    gold, pred = _parsed(reference), _parsed(answer)
    if not gold or not pred:
        return False
    try:
        return bool(verify(list(gold), list(pred), timeout_seconds=_timeout()))
    except Exception:  # math_verify raises on exotic sympy objects; treat as not equal
        return False

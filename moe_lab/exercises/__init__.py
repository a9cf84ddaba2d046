"""Exercise checkers: every notebook ends with exercises that these functions grade.

Each notebook has a module here (``moe_lab.exercises.nb01`` for notebook 01, ...). A checker takes
the learner's answer and returns a ``Feedback``: right, or what exactly is wrong. Checkers never raise
on a wrong answer: a wrong type or shape is feedback too.

Every message a learner reads is wrapped in ``moe_lab.i18n._`` (one call per sentence, the variable parts as named
placeholders), so ``moe_lab.setup(lang="zh")`` shows the feedback in Chinese; the exercise names too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe_lab.i18n import _


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer; shows as one line in a notebook."""

    exercise: str
    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        # i18n: the verdict words, also shown by the answer boxes of moe_lab.viz.widgets.ExerciseBox
        verdict = _("right") if self.correct else _("not yet")
        # i18n: one line of feedback: the exercise's name in brackets, the verdict, then the message
        return _("[{exercise}] {verdict}: {message}").format(exercise=self.exercise, verdict=verdict,
                                                               message=self.message)

    __repr__ = __str__


def right(exercise: str, message: str | None = None) -> Feedback:
    """A right answer; ``message`` (already translated) says why it is right, else "well done."."""
    return Feedback(exercise, True, _("well done.") if message is None else message)


def wrong(exercise: str, message: str) -> Feedback:
    return Feedback(exercise, False, message)


def unanswered(exercise: str, answer) -> Feedback | None:
    """Feedback for a placeholder answer (``None`` or ``...``), else None.

    Feedback is falsy when wrong, so test the result with ``is not None``."""
    if answer is None or answer is Ellipsis:
        return wrong(exercise, _("no answer yet: replace the placeholder and run the cell again."))
    return None


def as_array(exercise: str, answer, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray | None, Feedback | None]:
    """Convert a Tensor/array/list answer to a NumPy array, or explain why it cannot be used."""
    if hasattr(answer, "asnumpy"):
        answer = answer.asnumpy()
    try:
        arr = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        return None, wrong(exercise, _("expected numbers (a Tensor, array or list), got {type}.").format(
            type=type(answer).__name__))
    if shape is not None and arr.shape != tuple(shape):
        return None, wrong(exercise, _("expected shape {expected}, got {got}.").format(expected=tuple(shape),
                                                                                        got=arr.shape))
    return arr, None


def known_slip(exercise: str, answer, slips: dict) -> Feedback | None:
    """Feedback naming a typical mistake when ``answer`` equals one of ``slips`` (value -> hint, the hint already
    translated), else None."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        return None
    for value, hint in slips.items():
        if np.isclose(float(answer), value, rtol=1e-9, atol=1e-12):
            # i18n: a typical wrong answer, then the hint that names the slip
            return wrong(exercise, _("{value} — {hint}").format(value=format_number(answer), hint=hint))
    return None


def check_number(exercise: str, answer, expected: float, *, rel: float = 1e-6, hint: str = "") -> Feedback:
    """Grade a single number against ``expected`` within a relative tolerance; ``hint`` (already translated)
    follows "too large"/"too small"."""
    missing = unanswered(exercise, answer)
    if missing is not None:
        return missing
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        return wrong(exercise, _("expected a number, got {type}.").format(type=type(answer).__name__))
    if np.isclose(float(answer), expected, rtol=rel, atol=0.0):
        return right(exercise, _("{value} is correct.").format(value=format_number(expected)))
    too_large = float(answer) > expected
    if hint:
        message = _("{value} is too large. {hint}") if too_large else _("{value} is too small. {hint}")
    else:
        message = _("{value} is too large.") if too_large else _("{value} is too small.")
    return wrong(exercise, message.format(value=format_number(answer), hint=hint))


def format_number(value) -> str:
    """A number as a learner writes it: integers in full with thousands separators (``352,354,304``, never
    ``3.52354e+08``), other values with up to 6 significant digits."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e18:
        return f"{int(value):,}"
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"

"""The board's exceptions, named once."""

from __future__ import annotations


class BoardError(Exception):
    """The board cannot do what was asked: bad configuration, or a start it refuses."""


class Forbidden(BoardError):
    """A person tried to act for an agent they do not act for (HTTP 403)."""


class Invalid(BoardError):
    """A form's input is wrong; `errors` name every problem (shown on the form)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))

"""The application's refusals: every domain raises these, the web layer turns them into answers
(a JSON `{"detail": ...}` under /api, the message in the page elsewhere), the CLI prints them.

An error that belongs to one input field names it, so a form shows it next to that field and
the API answers `{"detail": {"field": ..., "reason": ...}}`.
"""

from __future__ import annotations


class AppError(Exception):
    """A request the application refuses, with a message for people."""

    status_code = 400
    title = "Not possible"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def detail(self) -> object:
        """The JSON answer's `detail`."""
        if self.field:
            return {"field": self.field, "reason": self.message}
        return self.message


class NotFound(AppError):
    """No such thing: `what` (store, terminal, provider account) with `key`."""

    status_code = 404
    title = "Not found"

    def __init__(self, what: str, key: object, *, field: str | None = None):
        super().__init__(f"no {what} {key}", field=field)
        self.what = what
        self.key = str(key)


class Conflict(AppError):
    """The write would break a rule of what is stored (a reference, a one-time token)."""

    status_code = 409


class NameTaken(Conflict):
    """A name or code that must be unique is already used."""


class InvalidInput(AppError):
    """Input that cannot be used, with a message per field."""

    status_code = 422
    title = "Check the input"

    def __init__(self, errors: dict[str, str]):
        super().__init__(" ".join(errors.values()), field=next(iter(errors), None))
        self.errors = errors

    @property
    def detail(self) -> object:
        return [{"field": f, "message": m} for f, m in self.errors.items()]


class UpstreamFailed(AppError):
    """A service we depend on (a provider's API) did not answer usefully."""

    status_code = 502
    title = "The provider did not answer"


class Unauthenticated(AppError):
    """No credentials, or credentials we do not know (a store agent's token)."""

    status_code = 401
    title = "Not signed in"


class Forbidden(AppError):
    """Known credentials asking for something they may not touch."""

    status_code = 403
    title = "Not allowed"


class TooLarge(AppError):
    status_code = 413
    title = "Too large"


class RateLimited(AppError):
    """Too many calls: try again after `retry_after_s`."""

    status_code = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

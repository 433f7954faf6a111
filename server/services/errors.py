"""Exceptions services raise; handlers/base.py maps each class to an HTTP status in one table."""
from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a service reports to its caller."""

    field: str | None = None  # the input at fault, when one is
    retry_after: int | None = None  # seconds after which trying again may succeed

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(ServiceError):
    """The caller's input breaks a rule; `field` names which input."""

    field: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class NotFound(ServiceError):
    """The thing asked for does not exist."""


class Unavailable(ServiceError):
    """The service cannot take the work now; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(ServiceError):
    """The caller did this too often; it may try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

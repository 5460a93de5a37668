"""wagate's error hierarchy. No HTTP here: `wagate.http.errors` maps these classes to status codes.

WagateError                  unexpected failure
├── BadRequestData           malformed chatId or request data ("bad request data")
├── ValidationFailed         the body breaks the method's schema
├── InvalidJsonBody          the body is not JSON
├── BodyTooLarge             the body is over the size limit
├── InvalidPathParameter     a path parameter is malformed (idInstance, receiptId)
├── UnknownMethod            no such GREEN-API method
├── UnknownInstance          no instance has this idInstance
├── InvalidToken             the apiTokenInstance (or partner token) is wrong
├── RateLimited              the per-instance, per-method budget is spent
├── InstanceNotAuthorized    the instance's state forbids the call
├── PushModeActive           receiveNotification while webhookUrl is set
├── InstanceConflict         an instance for this phone already exists
└── WorldFileError           a sandbox world file cannot be loaded
"""

from __future__ import annotations


class WagateError(Exception):
    """Unexpected failure."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequestData(WagateError):
    """bad request data"""


class ValidationFailed(WagateError):
    """Validation failed"""

    def __init__(self, details: str) -> None:
        super().__init__(f"Validation failed. Details: {details}")


class InvalidJsonBody(WagateError):
    """Invalid JSON body"""


class BodyTooLarge(WagateError):
    """Request body is too large"""


class InvalidPathParameter(WagateError):
    """A path parameter is malformed."""


class UnknownMethod(WagateError):
    """Not Found"""


class UnknownInstance(WagateError):
    """Forbidden"""


class InvalidToken(WagateError):
    """Unauthorized"""


class RateLimited(WagateError):
    """Too Many Requests"""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__()
        self.retry_after_s = retry_after_s


class InstanceNotAuthorized(WagateError):
    """instance account not authorized"""


class PushModeActive(WagateError):
    """Notifications are being pushed to webhookUrl; clear webhookUrl to receive them by polling"""


class InstanceConflict(WagateError):
    """An instance for this phone already exists."""


class WorldFileError(WagateError):
    """The sandbox world file cannot be loaded."""

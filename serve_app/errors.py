"""The one error tree of Fusion Router.

Every error a client sees is rendered from this tree into OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with the status the class carries::

    FusionError                                  (abstract: status, type, code, param)
    ├── InvalidRequestError                 400  invalid_request_error
    │   ├── ModelNotFoundError              404  invalid_request_error / model_not_found
    │   └── UnsupportedParameterError       400  invalid_request_error / unsupported_parameter
    ├── AuthenticationError                 401  authentication_error / invalid_api_key
    ├── NotFoundError                       404  not_found_error (unknown path)
    ├── MethodNotAllowedError               405  invalid_request_error
    ├── PayloadTooLargeError                413  invalid_request_error / request_too_large
    ├── PermissionDeniedError               403  permission_error (admin endpoints, bad admin key)
    ├── RateLimitError                      429  rate_limit_error / rate_limit_exceeded (a key's rpm/tpm;
    │                                            Retry-After and x-ratelimit-* headers)
    ├── BudgetExceededError                 429  insufficient_quota / insufficient_quota
    │                                            (names the exhausted budget; Retry-After when it resets)
    ├── LedgerUnavailableError              503  service_unavailable / budget_ledger_unavailable
    ├── NoProviderAvailableError     502/503/504 service_unavailable / no_provider_available
    │                                            (lists every attempt that was made)
    └── ProviderError                            carries provider, model, status, retryable, retry_after
        ├── ProviderStatusError                  the provider answered with an HTTP error status
        │   ├── ProviderBadRequestError          400/404/422: the request itself is wrong (not retryable)
        │   ├── ProviderAuthError                401/403: our credentials for that provider (not retryable)
        │   ├── ProviderRateLimitError           429 (retryable, honours Retry-After)
        │   ├── ProviderOverloadedError          503/529 (retryable)
        │   └── ProviderServerError              other 5xx, 408, 409 (retryable)
        ├── ProviderConnectionError              connect refused/reset, DNS (retryable)
        ├── ProviderTimeoutError                 connect/first-token/total timeout (retryable)
        └── ProviderStreamError                  stream cut, stalled or malformed (retryable)

Provider adapters translate their SDK's exception classes into ``ProviderError``
subclasses at their boundary (by class and status code, never by message text).
``ProviderError`` values cross Ray process boundaries, so every class pickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class FusionError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self._code = code

    @property
    def http_status(self) -> int:
        return self.status

    @property
    def error_code(self) -> str | None:
        return self._code or self.code

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.error_code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(FusionError):
    status = 400
    type = "invalid_request_error"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    code = "model_not_found"


class UnsupportedParameterError(InvalidRequestError):
    code = "unsupported_parameter"


class AuthenticationError(FusionError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(FusionError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowedError(FusionError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(FusionError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(FusionError):
    """The key sent more requests or tokens a minute than its ``rpm`` or ``tpm`` allows
    (``serve_app/rate_limits.py``); the headers say when the request would be admitted
    (Retry-After, absent when its prompt alone is more than the key's tpm) and each limit's state."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.limit = limit  # "requests" or "tokens" (the key's), "team_requests" or "team_tokens"
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


class PermissionDeniedError(FusionError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class BudgetExceededError(FusionError):
    """OpenAI's answer when an account has no quota left: 429 with type and code insufficient_quota."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, scope: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.scope = scope
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": f"{max(1, round(self.retry_after_s))}"} if self.retry_after_s else {}


class LedgerUnavailableError(FusionError):
    """The budget ledger did not answer in time: the request is refused rather than let through
    unbudgeted (it may be retried; nothing was charged)."""

    status = 503
    type = "service_unavailable"
    code = "budget_ledger_unavailable"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


@dataclass(frozen=True)
class Attempt:
    """One call the router made while serving a request."""

    provider: str
    model: str
    error: str | None = None  # error kind (class name) or None when it succeeded
    status: int | None = None
    message: str | None = None

    def describe(self) -> str:
        what = self.error or "ok"
        if self.status is not None:
            what = f"{what} ({self.status})"
        return f"{self.provider}/{self.model}: {what}"


class NoProviderAvailableError(FusionError):
    type = "service_unavailable"
    code = "no_provider_available"

    def __init__(self, attempts: list[Attempt], *, status: int = 503, reason: str | None = None) -> None:
        tried = "; ".join(a.describe() for a in attempts) or "no candidate"
        lead = reason or "No provider could serve the request"
        super().__init__(f"{lead}. Tried: {tried}.")
        self.attempts = attempts
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"_status": self._status, "message": self.message}  # the message may carry a reason
        return (NoProviderAvailableError, (self.attempts,), state)


class ProviderError(FusionError):
    """A failed call to one provider; decides whether another attempt may succeed."""

    status = 502
    type = "provider_error"
    code = "provider_error"
    default_retryable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status_code: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "provider": self.provider,
            "model": self.model,
            "status_code": self.status_code,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
        }
        return (_rebuild_provider_error, (type(self), self.message, kwargs))

    @property
    def kind(self) -> str:
        return _KIND_NAMES.get(type(self), type(self).__name__)


def _rebuild_provider_error(cls: type[ProviderError], message: str, kwargs: dict[str, Any]) -> ProviderError:
    return cls(message, **kwargs)


class ProviderStatusError(ProviderError):
    pass


class ProviderBadRequestError(ProviderStatusError):
    status = 400
    type = "invalid_request_error"
    code = "provider_rejected_request"
    default_retryable = False


class ProviderAuthError(ProviderStatusError):
    default_retryable = False


class ProviderRateLimitError(ProviderStatusError):
    pass


class ProviderOverloadedError(ProviderStatusError):
    pass


class ProviderServerError(ProviderStatusError):
    pass


class ProviderConnectionError(ProviderError):
    pass


class ProviderTimeoutError(ProviderError):
    pass


class ProviderStreamError(ProviderError):
    pass


_KIND_NAMES: dict[type[ProviderError], str] = {
    ProviderError: "provider_error",
    ProviderStatusError: "status_error",
    ProviderBadRequestError: "bad_request",
    ProviderAuthError: "auth_error",
    ProviderRateLimitError: "rate_limited",
    ProviderOverloadedError: "overloaded",
    ProviderServerError: "server_error",
    ProviderConnectionError: "connection_error",
    ProviderTimeoutError: "timeout",
    ProviderStreamError: "stream_error",
}


def provider_error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    model: str,
    retry_after: float | None = None,
) -> ProviderError:
    """Classify an HTTP error status from a provider into the tree (used by every adapter)."""
    cls: type[ProviderError]
    if status == 429:
        cls = ProviderRateLimitError
    elif status in (503, 529):
        cls = ProviderOverloadedError
    elif status in (401, 403):
        cls = ProviderAuthError
    elif status in (408, 409) or status >= 500:
        cls = ProviderServerError
    elif 400 <= status < 500:
        cls = ProviderBadRequestError
    else:
        cls = ProviderServerError
    return cls(message, provider=provider, model=model, status_code=status, retry_after=retry_after)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())

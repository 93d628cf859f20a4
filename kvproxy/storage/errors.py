"""What went wrong, read from whatever s3fs, gcsfs, adlfs or the OS raised.

Each SDK has its own exception types, and the fsspec layers wrap them again
(s3fs turns botocore's ``ClientError`` into ``PermissionError`` with the
original as ``__cause__``, gcsfs raises plain ``OSError("Forbidden: ...")``,
adlfs lets azure-core's ``HttpResponseError`` through). ``classify`` walks the
chain of causes and looks at class names and status attributes only, so this
module imports none of the SDKs.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any, Literal

Kind = Literal["not_found", "bucket_missing", "no_credentials", "denied", "transient", "other"]

_NO_CREDENTIALS_CLASSES = {
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",  # botocore
    "DefaultCredentialsError",  # google.auth
    "CredentialUnavailableError",  # azure.identity
    "ProfileNotFound",  # botocore: a profile that no file defines
}
_DENIED_CLASSES = {"ClientAuthenticationError", "RefreshError"}
_DENIED_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
    "AuthorizationFailure", "AuthenticationFailed", "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions", "InvalidAuthenticationInfo",
}
_BUCKET_CODES = {"NoSuchBucket", "ContainerNotFound"}
_TRANSIENT_CLASSES = {
    # botocore
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError",
    # azure-core
    "ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError",
    "ServiceResponseTimeoutError",
    # aiohttp (gcsfs, adlfs)
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
    "ClientPayloadError", "ServerTimeoutError", "ClientOSError",
    # requests, google-api-core
    "ProxyError", "Timeout", "ServiceUnavailable", "InternalServerError",
    "TooManyRequests", "DeadlineExceeded", "TransportError",
}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
    "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
    "ServerBusy", "OperationTimedOut",
}
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
    errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN,
}


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen or len(seen) >= 16:
            continue
        seen.add(id(current))
        yield current
        todo.append(current.__cause__)
        if not current.__suppress_context__:
            todo.append(current.__context__)
        for attribute in ("inner_exception", "os_error"):  # azure-core, aiohttp
            inner = getattr(current, attribute, None)
            if isinstance(inner, BaseException):
                todo.append(inner)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _code_and_status(exc: BaseException) -> tuple[str, int | None]:
    """The provider's error code and HTTP status, where the exception carries them."""
    code = ""
    status: int | None = None
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code.isdigit():
            status = status or int(code)
    elif response is not None:  # requests.HTTPError
        status = getattr(response, "status_code", None)
    error_code = getattr(exc, "error_code", None)  # azure-core
    if isinstance(error_code, str):
        code = code or error_code
    for attribute in ("status_code", "status", "code"):  # azure, aiohttp, gcsfs HttpError
        value = getattr(exc, attribute, None)
        if status is None and isinstance(value, int) and 100 <= value < 600:
            status = value
    if not code and "ErrorCode:" in str(exc):  # azure-core puts it in the message
        code = str(exc).split("ErrorCode:", 1)[1].split()[0]
    return code, status if isinstance(status, int) else None


def _no_credentials(exc: BaseException) -> bool:
    if _names(exc) & _NO_CREDENTIALS_CLASSES:
        return True
    # DefaultAzureCredential found nothing it could use
    return "ClientAuthenticationError" in _names(exc) and "failed to retrieve a token" in str(exc)


def _bucket_missing(exc: BaseException, bucket: str) -> bool:
    code, _ = _code_and_status(exc)
    if code in _BUCKET_CODES or _names(exc) & _BUCKET_CODES:
        return True
    text = str(exc)
    if "specified bucket does not exist" in text or "specified container does not exist" in text:
        return True
    # gcsfs: a 404 on the bucket's object listing is raised as FileNotFoundError("b/NAME/o")
    return bool(bucket) and isinstance(exc, FileNotFoundError) and text == f"b/{bucket}/o"


def _retryable_refresh(exc: BaseException) -> bool:
    """google-auth could not reach the token endpoint, or it answered 5xx: gcsfs no
    longer retries this itself (gcs.py), so it counts as transient, not as denied."""
    return "RefreshError" in _names(exc) and getattr(exc, "retryable", False) is True


def _denied(exc: BaseException) -> bool:
    if _retryable_refresh(exc):
        return False
    if isinstance(exc, PermissionError) or _names(exc) & _DENIED_CLASSES:
        return True
    code, status = _code_and_status(exc)
    if code in _DENIED_CODES or status in (401, 403):
        return True
    # gcsfs raises a plain OSError for 403
    return type(exc) is OSError and str(exc).startswith("Forbidden")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if _names(exc) & _TRANSIENT_CLASSES or _retryable_refresh(exc):
        return True
    code, status = _code_and_status(exc)
    return code in _TRANSIENT_CODES or status in (408, 429) or (status or 0) >= 500


def classify(exc: BaseException, bucket: str = "") -> Kind:
    """What kind of failure ``exc`` is; ``bucket`` helps recognise a missing GCS bucket."""
    chain = list(causes(exc))
    checks: tuple[tuple[Kind, Any], ...] = (
        ("no_credentials", _no_credentials),
        ("bucket_missing", lambda e: _bucket_missing(e, bucket)),
        ("denied", _denied),
        ("transient", _transient),
    )
    for kind, check in checks:
        if any(check(e) for e in chain):
            return kind
    if isinstance(exc, FileNotFoundError):
        return "not_found"
    return "other"


def is_transient(exc: BaseException) -> bool:
    """Worth trying again: the connection or the service failed, not the request."""
    from kvproxy.storage.store import AccessDenied, BucketNotFound, NotFound, Unavailable

    if isinstance(exc, Unavailable):
        return True
    if isinstance(exc, NotFound | AccessDenied | BucketNotFound | ValueError):
        return False
    return classify(exc) == "transient"


def reason(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(" Content: <?xml", 1)[0]  # azure-core appends the raw response body
    return text if len(text) <= limit else text[: limit - 3] + "..."

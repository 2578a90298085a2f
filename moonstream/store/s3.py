"""A store in an S3 bucket (or any S3-compatible server) through a boto3 client.

Every write is a single PUT. Create-only is ``If-None-Match: *`` and compare-and-swap is
``If-Match: <etag>``, both enforced by the server: a 412 (or a 409 ConditionalRequestConflict, a
conditional write racing another) becomes :class:`ObjectExists` / :class:`PreconditionFailed`.
botocore's own retries are off (``total_max_attempts=1``; botocore's ``max_attempts`` would count
retries only, so ``max_attempts=1`` still retries once). Transient failures (5xx, throttling, timeouts,
connection errors) are retried by :func:`moonstream.store.retry.call_with_retries` and finally raise
:class:`StoreUnavailable`.

A conditional write whose earlier attempt failed in transit may have landed anyway; if the retry then
gets a 412, the object is checked and an etag equal to the md5 of our bytes counts as our write.

Etags are returned unquoted (hex md5 for single-part uploads), like :class:`LocalStore`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from moonstream.store.base import (
    ObjectExists,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    StoredObject,
    StoreError,
    StoreUnavailable,
    validate_key,
    validate_prefix,
)
from moonstream.store.local import md5_etag
from moonstream.store.retry import DEFAULT_RETRY_POLICY, ErrorKind, RetryPolicy, call_with_retries

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

T = TypeVar("T")

_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def _status_and_code(exc: ClientError) -> tuple[int, str]:
    response: Mapping[str, Any] = exc.response
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code") or status)
    return status, code


def classify_s3_error(exc: BaseException) -> ErrorKind | None:
    """What a boto3 S3 failure means for retrying; None for exceptions that are not S3 failures."""
    if isinstance(exc, ClientError):
        status, code = _status_and_code(exc)
        if code == "NoSuchBucket":
            return ErrorKind.CLIENT  # a 404, but about the bucket, not the key
        if status == 404 or code in _NOT_FOUND_CODES:
            return ErrorKind.NOT_FOUND
        if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return ErrorKind.PRECONDITION
        if status == 429 or code in _THROTTLE_CODES:
            return ErrorKind.THROTTLED
        if status == 408 or code == "RequestTimeout":
            return ErrorKind.TIMEOUT
        if status >= 500:
            return ErrorKind.SERVER
        return ErrorKind.CLIENT
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return ErrorKind.CONNECTION
    return None


def _describe(exc: BaseException) -> str:
    """A short, credential-free description of a boto3 failure."""
    if isinstance(exc, ClientError):
        status, code = _status_and_code(exc)
        return f"HTTP {status} {code}"
    return type(exc).__name__


def _unquote(etag: str) -> str:
    return etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else etag


def _meta_from_response(response: Mapping[str, Any]) -> ObjectMeta:
    return ObjectMeta(
        content_type=response.get("ContentType") or "application/octet-stream",
        cache_control=response.get("CacheControl") or None,
        content_encoding=response.get("ContentEncoding") or None,
    )


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``.

    ``endpoint_url`` points at an S3-compatible server (path-style addressing is then used);
    ``client_kwargs`` go to ``boto3.client`` (region, credentials, ...). ``retry_policy`` and
    ``sleep`` control our retries; ``list_page_size`` is the ``MaxKeys`` of each listing request.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        list_page_size: int = 1000,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.retry_policy = retry_policy
        self._list_page_size = list_page_size
        self._sleep_override = sleep
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # no botocore retries
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        kwargs = dict(client_kwargs or {})
        self._client: S3Client = boto3.client("s3", endpoint_url=endpoint_url, config=config, **kwargs)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- plumbing --------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 request with our retries and map its final failure to a store error."""
        where = self._where(key)
        kwargs: dict[str, Any] = {}
        if self._sleep_override is not None:
            kwargs["sleep"] = self._sleep_override
        try:
            return call_with_retries(fn, classify_s3_error, self.retry_policy, what=f"{op} {where}", **kwargs)
        except (ClientError, BotoCoreError) as exc:
            kind = classify_s3_error(exc)
            detail = _describe(exc)
            if kind is ErrorKind.NOT_FOUND:
                raise ObjectNotFound(f"{where}: not found ({detail})") from exc
            if kind is ErrorKind.PRECONDITION:
                raise PreconditionFailed(f"{where}: {op} precondition failed ({detail})") from exc
            if kind is not None and kind.retryable:
                raise StoreUnavailable(
                    f"{where}: {op} failed after {self.retry_policy.max_attempts} attempts ({detail})"
                ) from exc
            raise StoreError(f"{where}: {op} failed ({detail})") from exc

    def _put(self, op: str, key: str, data: bytes, meta: ObjectMeta, **conditions: str) -> str:
        """One PUT with metadata and conditions; resolves an ambiguous retry against the server."""
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full_key(key),
            "Body": data,
            "ContentType": meta.content_type,
        }
        if meta.cache_control is not None:
            request["CacheControl"] = meta.cache_control
        if meta.content_encoding is not None:
            request["ContentEncoding"] = meta.content_encoding
        request.update(conditions)
        attempts = 0

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            return _unquote(self._client.put_object(**request)["ETag"])

        try:
            return self._call(op, key, attempt)
        except PreconditionFailed:
            if attempts > 1 and conditions:
                # An earlier attempt may have landed before its response was lost.
                current = self.head(key)
                if current is not None and current.etag == md5_etag(data):
                    logger.info("%s: %s landed on an earlier attempt", self._where(key), op)
                    return current.etag
            raise

    # -- Store -----------------------------------------------------------------------------------

    def read(self, key: str) -> StoredObject:
        """The object's bytes, etag and metadata; raises :class:`ObjectNotFound`."""
        full = self._full_key(key)

        def attempt() -> StoredObject:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            return StoredObject(key, data, _unquote(response["ETag"]), _meta_from_response(response))

        return self._call("read", key, attempt)

    def head(self, key: str) -> StoredObject | None:
        """Etag and metadata without the body, or None if absent."""
        full = self._full_key(key)

        def attempt() -> StoredObject:
            response = self._client.head_object(Bucket=self.bucket, Key=full)
            return StoredObject(key, b"", _unquote(response["ETag"]), _meta_from_response(response))

        try:
            return self._call("head", key, attempt)
        except ObjectNotFound:
            return None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, sorted (one retried request per page)."""
        validate_prefix(prefix)
        strip = f"{self.prefix}/" if self.prefix else ""
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": strip + prefix,
            "MaxKeys": self._list_page_size,
        }
        keys: list[str] = []
        while True:
            page = self._call("list", prefix or "", lambda: self._client.list_objects_v2(**request))
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # folder markers made by consoles are not objects
                    keys.append(item["Key"][len(strip) :])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            request["ContinuationToken"] = token
        return iter(sorted(keys))

    def create(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Write a new object with ``If-None-Match: *``; raise :class:`ObjectExists` if present."""
        try:
            return self._put("create", key, data, meta, IfNoneMatch="*")
        except PreconditionFailed as exc:
            raise ObjectExists(f"{self._where(key)}: already exists") from exc

    def replace(self, key: str, data: bytes, meta: ObjectMeta, *, expected_etag: str | None) -> str:
        """Compare-and-swap with ``If-Match`` (or ``If-None-Match: *`` when ``expected_etag`` is None)."""
        if expected_etag is None:
            return self._put("replace", key, data, meta, IfNoneMatch="*")
        try:
            return self._put("replace", key, data, meta, IfMatch=f'"{_unquote(expected_etag)}"')
        except ObjectNotFound as exc:
            raise PreconditionFailed(f"{self._where(key)}: absent, expected etag {expected_etag}") from exc

    def put(self, key: str, data: bytes, meta: ObjectMeta) -> str:
        """Unconditional single PUT."""
        return self._put("put", key, data, meta)

    def delete(self, key: str) -> None:
        """Remove the key; absent is not an error."""
        full = self._full_key(key)
        self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=full))

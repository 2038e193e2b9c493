"""Objects in S3-compatible storage (s3://bucket/key): written, listed, and linked by presigned URLs.

boto3 finds the endpoint and the credentials in AWS's standard environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION), or in its other usual places: nothing here
takes a credential as an argument, so none can end up in a setting, a message or metadata. A failure is one
sentence naming the URI and the cause (no bucket, an endpoint that does not answer, access denied).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pathlib import Path

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8"}


class ObjectStoreError(RuntimeError):
    """An object that cannot be written or read; the message names its URI and why."""


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def content_type(key: str) -> str:
    return next((t for suffix, t in CONTENT_TYPES.items() if key.endswith(suffix)), "application/octet-stream")


def _client(signing: bool = False) -> Any:
    """An S3 client configured by the environment; `signing`: one that presigns with SigV4 (whose links are checked
    against their expiry by S3), whatever the endpoint's default."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4") if signing else None)


def explain(uri: str, exc: Exception) -> str:
    """`exc` (botocore's, the file system's) as one sentence about `uri`; it never holds credentials."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, Boto3Error) and isinstance(exc.__context__, ClientError | BotoCoreError):
        exc = exc.__context__  # boto3's transfers wrap the request's error (S3UploadFailedError)
    if isinstance(exc, EndpointConnectionError):
        parts = urlsplit(str(exc.kwargs.get("endpoint_url", "")))  # the request's URL: its endpoint is said
        endpoint = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "its endpoint"
        return f"{uri}: the object store does not answer at {endpoint} (check AWS_ENDPOINT_URL)"
    if isinstance(exc, NoCredentialsError):
        return f"{uri}: no credentials for the object store (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == "NoSuchBucket":
            return f"{uri}: the bucket {error.get('BucketName') or urlsplit(uri).netloc!r} does not exist"
        if code in ("NoSuchKey", "404"):
            return f"{uri}: no such object"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"{uri}: access denied ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        return f"{uri}: {code or type(exc).__name__}: {error.get('Message', exc)}"
    if isinstance(exc, FileNotFoundError) and uri.startswith("s3://"):  # s3fs's NoSuchBucket and NoSuchKey alike
        bucket = urlsplit(uri).netloc
        return f"{uri}: the bucket {bucket!r} does not exist" if _no_bucket(bucket) else f"{uri}: no such object"
    if isinstance(exc, FileNotFoundError):
        return f"{uri}: no such file"
    return f"{uri}: {type(exc).__name__}: {exc}"


def _no_bucket(bucket: str) -> bool:
    """Whether the bucket is known not to exist (a failure to ask is not an answer)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _client().head_bucket(Bucket=bucket)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket")
    except BotoCoreError:
        return False
    return False


def _failed(uri: str, doing: str, exc: Exception) -> ObjectStoreError:
    return ObjectStoreError(f"cannot {doing} {explain(uri, exc)}")


def s3_errors() -> tuple[type[Exception], ...]:
    """What only a client of S3 raises (boto3, botocore): a request refused or not answered."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (Boto3Error, BotoCoreError, ClientError)


def storage_errors() -> tuple[type[Exception], ...]:
    """What reaching an object store raises: boto3's and botocore's errors (boto3, s3fs, MLflow's S3 artifacts) and
    the file system's."""
    return (*s3_errors(), OSError)


def put_file(uri: str, file: Path) -> None:
    """Upload a file to `uri`, with the content type a browser renders (HTML, markdown)."""
    bucket, key = split_uri(uri)
    try:
        _client().upload_file(str(file), bucket, key, ExtraArgs={"ContentType": content_type(key)})
    except storage_errors() as exc:
        raise _failed(uri, "write", exc) from exc


def read_text(uri: str) -> str:
    bucket, key = split_uri(uri)
    try:
        body: bytes = _client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except storage_errors() as exc:
        raise _failed(uri, "read", exc) from exc
    return body.decode()


def exists(uri: str) -> bool:
    bucket, key = split_uri(uri)
    try:
        _client().head_object(Bucket=bucket, Key=key)
    except storage_errors() as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return False
        raise _failed(uri, "read", exc) from exc
    return True


def list_uris(prefix: str) -> list[str]:
    """Every object under `prefix` (s3://bucket/some/folder/), as s3:// URIs in key order."""
    bucket, key = split_uri(prefix)
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except storage_errors() as exc:
        raise _failed(prefix, "list", exc) from exc
    return [f"s3://{bucket}/{k}" for k in sorted(keys)]


@dataclass(frozen=True)
class Link:
    """A presigned HTTP(S) URL that opens an object until `expires`; or, when none can be made, why."""

    uri: str
    url: str | None
    expires: datetime | None
    no_link: str | None = None


def presigned_link(uri: str, seconds: int, now: datetime | None = None) -> Link:
    """A GET link to `uri` valid `seconds`, signed with the environment's credentials (a signature, never the key).

    Temporary credentials get no link: their URL would carry the session token itself and stop working with the
    session, whatever `seconds` says.
    """
    import boto3

    now = now or datetime.now(UTC)  # before signing: the expiry recorded is never later than the link's
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return Link(uri, None, None, "no link: no credentials for the object store in the environment")
    if credentials.get_frozen_credentials().token:
        return Link(
            uri,
            None,
            None,
            "no link: the object store's credentials are temporary (a session token), which a presigned URL would "
            f"carry; open it with your own credentials, e.g. `aws s3 presign {uri}`",
        )
    bucket, key = split_uri(uri)
    url = _client(signing=True).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
    )
    return Link(uri, url, now + timedelta(seconds=seconds))

"""An S3-compatible server for the object-storage tests: moto's server on 127.0.0.1, a real HTTP endpoint that the
code under test reaches through AWS's standard environment variables only (it never knows it is a test server)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class S3Server:
    url: str
    # Unique per server: the secrets tests grep for them. moto checks no signature, so any value is accepted.
    secret: str = field(default_factory=lambda: f"aws-secret-{uuid.uuid4().hex[:12]}")

    def env(self, session_token: str | None = None) -> dict[str, str]:
        """The standard variables every client reads (boto3, s3fs, MLflow, BentoML, delta-rs)."""
        return {
            "AWS_ACCESS_KEY_ID": "AKIAMLOPSTEST",
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
            **({"AWS_SESSION_TOKEN": session_token} if session_token else {}),
        }

    def client(self) -> Any:
        """A boto3 client for the test's own look at the bucket (not the code under test's)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="AKIAMLOPSTEST",
            aws_secret_access_key=self.secret,
        )

    def bucket(self, prefix: str = "mlops") -> str:
        """A new, empty bucket of a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

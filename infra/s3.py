"""S3 administration the pipeline needs (buckets), through boto3 with the configured endpoint."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from diffcxr.errors import StorageError
from diffcxr.storage import s3_client as client


def ensure_bucket(name: str) -> None:
    """Create ``name`` unless it exists (idempotent)."""
    s3 = client()
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"cannot access bucket '{name}': {exc}") from None
    except BotoCoreError as exc:
        raise StorageError(f"cannot reach S3 for bucket '{name}': {exc}") from None
    try:
        s3.create_bucket(Bucket=name)
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"cannot create bucket '{name}': {exc}") from None

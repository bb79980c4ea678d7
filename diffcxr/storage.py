"""One way to read and write every artefact, whether it lives on a local disk or in S3.

Stages only ever see URIs (``/abs/path``, ``relative/path``, ``file:///...`` or
``s3://bucket/key``). This module turns a URI into a ``pyarrow.fs`` filesystem
and a path, so the same code runs on a laptop and on a cluster with an object
store. The S3 endpoint is configurable (``storage.s3_endpoint``, else
``AWS_ENDPOINT_URL``) so that MinIO, moto or any S3-compatible server works.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from diffcxr.errors import StorageError


@dataclass(frozen=True)
class S3Settings:
    """Where S3 URIs go. ``endpoint`` None means the AWS default (or ``AWS_ENDPOINT_URL``)."""

    endpoint: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            endpoint=os.environ.get("DIFFCXR_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None,
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )


_settings: S3Settings | None = None


def configure_s3(endpoint: str | None = None, region: str = "us-east-1") -> None:
    """Set the S3 endpoint for this process (stages call this from ``storage`` config).

    The endpoint is also exported as ``DIFFCXR_S3_ENDPOINT`` so that Ray workers
    started later from this process inherit it.
    """
    global _settings
    env = S3Settings.from_env()
    _settings = S3Settings(endpoint=endpoint or env.endpoint, region=region or env.region)
    if _settings.endpoint:
        os.environ["DIFFCXR_S3_ENDPOINT"] = _settings.endpoint


def s3_settings() -> S3Settings:
    return _settings or S3Settings.from_env()


def s3_client():  # noqa: ANN201 - boto3 clients are dynamically typed
    """A boto3 S3 client for the configured endpoint (a bare ``host:port`` read as http, as pyarrow does)."""
    import boto3

    settings = s3_settings()
    endpoint = settings.endpoint
    if endpoint and "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return boto3.client("s3", endpoint_url=endpoint, region_name=settings.region)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {"region": settings.region}
    if settings.endpoint:
        parsed = urlparse(settings.endpoint if "://" in settings.endpoint else f"http://{settings.endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "http"
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a URI."""
    if not uri:
        raise StorageError("empty URI")
    if is_s3(uri):
        path = uri[len("s3://") :].rstrip("/")
        if not path or path.startswith("/"):
            raise StorageError(f"'{uri}' is not a valid s3://bucket/key URI")
        return _s3_filesystem(s3_settings()), path
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    elif "://" in uri:
        raise StorageError(f"unsupported URI scheme in '{uri}': use a local path, file:// or s3://")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (always with '/', also for S3)."""
    if is_s3(uri) or "://" in uri:
        return posixpath.join(uri.rstrip("/"), *parts)
    return str(Path(uri, *parts))


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def _wrap(uri: str, action: str, exc: Exception) -> StorageError:
    return StorageError(f"cannot {action} '{uri}': {exc}")


def read_bytes(uri: str) -> bytes:
    """The whole object. Read as a random-access file, which knows its size and fetches it in one request:
    pyarrow's S3 *stream* reads an unknown length in small chunks, one request each (a 90 MB text bundle took
    24 s from a moto server that way, 0.2 s this way)."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            return f.read()
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(uri, "read", exc) from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object. Local writes go through a temp file + rename, so a reader
    never sees half a file; S3 PUTs are atomic already."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(posixpath.dirname(path), recursive=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(tmp, compression=None) as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(path, compression=None) as f:
                f.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(uri, "write", exc) from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """URIs of the files under a folder URI (sorted), optionally only those ending in ``suffix``."""
    fs, path = resolve(uri)
    prefix = "s3://" if is_s3(uri) else ""
    return [prefix + i.path for i in _file_infos(uri, fs, path, recursive) if i.path.endswith(suffix)]


def _file_infos(uri: str, fs: pafs.FileSystem, path: str, recursive: bool = True) -> list[pafs.FileInfo]:
    """The files (not folders) under ``path``, sorted by path; none when it does not exist."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(uri, "list", exc) from None
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def delete(uri: str) -> None:
    """Delete a file or a folder tree; a missing target is not an error."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    try:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(uri, "delete", exc) from None


def copy(src: str, dst: str) -> None:
    """Copy one file between any two URIs (local↔S3 included)."""
    write_bytes(dst, read_bytes(src))


def read_parquet(uri: str) -> pa.Table:
    fs, path = resolve(uri)
    try:
        return pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(uri, "read Parquet", exc) from None


def write_parquet(table: pa.Table, uri: str) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue())


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a URI, or None when it is remote."""
    fs, path = resolve(uri)
    return Path(path) if isinstance(fs, pafs.LocalFileSystem) else None


def put_folder(local: str | Path, uri: str) -> str:
    """Upload a local folder tree to ``uri`` (local or s3://), replacing what was there; returns ``uri``."""
    local = Path(local)
    if local_path(uri) is not None and Path(local_path(uri)).resolve() == local.resolve():
        return uri
    delete(uri)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        write_bytes(join(uri, *path.relative_to(local).parts), path.read_bytes())
    return uri


#: Default size cap of the download cache of :func:`get_folder` (``DIFFCXR_FOLDER_CACHE_GB``).
FOLDER_CACHE_GB = 4.0
#: A cached folder untouched this long may be evicted beyond the cap; a partial download this old is dropped.
FOLDER_CACHE_IDLE_S = 6 * 3600


def folder_cache_root() -> Path:
    """Where :func:`get_folder` keeps remote folders: ``DIFFCXR_FOLDER_CACHE``, else a per-user folder in the
    temp dir (never shared between users: one user's cache is not another's to read or plant files in)."""
    given = os.environ.get("DIFFCXR_FOLDER_CACHE")
    return Path(given) if given else Path(tempfile.gettempdir(), f"diffcxr-folders-{getpass.getuser()}")


def get_folder(uri: str, local: str | Path | None = None) -> Path:
    """A local copy of a folder URI: the folder itself when it is local, else a download.

    With ``local`` the download goes there. Without it, a remote folder is downloaded once per machine into
    :func:`folder_cache_root`, under a key of the URI and every file's name, size and S3 ETag, so the
    processes that load one model bundle (text actors, train workers, the driver, eval actors) share one
    download, and a folder rewritten in place is fetched again. A folder that changes while it downloads is
    fetched again rather than cached half-old. Treat a cached folder as read-only. Folders unused for
    ``FOLDER_CACHE_IDLE_S`` are evicted, oldest first, once the cache exceeds ``DIFFCXR_FOLDER_CACHE_GB``
    (default 4).
    """
    here = local_path(uri)
    if here is not None:
        if not here.is_dir():
            raise StorageError(f"'{uri}' is not a folder")
        return here
    fs, root = resolve(uri)
    files = _remote_files(uri, fs, root)
    if local is not None:
        return _download(fs, root, files, Path(local))
    cache = folder_cache_root()
    for _ in range(3):
        listing = _content_listing(uri, root, files)
        key = hashlib.sha256(json.dumps([uri, listing]).encode()).hexdigest()[:32]
        final = cache / key
        if final.is_dir():
            with contextlib.suppress(OSError):  # marking it used is best-effort
                os.utime(final)
            return final
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=cache))
        try:
            _download(fs, root, files, partial)
            files = _remote_files(uri, fs, root)
            if _content_listing(uri, root, files) != listing:  # rewritten while we read it: read it again
                continue
            with contextlib.suppress(OSError):  # fails when another process finished the same folder first
                partial.rename(final)  # atomic: a cached folder is always complete
            _trim_folder_cache(cache, keep=final)
            return final
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    raise StorageError(f"'{uri}' kept changing while it downloaded; try again when it is written")


def _remote_files(uri: str, fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    files = _file_infos(uri, fs, root)
    if not files:
        raise StorageError(f"'{uri}' is empty or does not exist")
    return files


def _content_listing(uri: str, root: str, files: list[pafs.FileInfo]) -> list[tuple[str, int, str]]:
    """(name, size, content tag) per file: S3's ETag (the content's digest; pyarrow does not expose it, so
    one boto3 listing), else the modification time."""
    if not is_s3(uri):
        return [(i.path[len(root) :], int(i.size or 0), str(i.mtime_ns)) for i in files]
    bucket, _, prefix = root.partition("/")
    tags: dict[str, str] = {}
    try:
        listing = s3_client().get_paginator("list_objects_v2")
        for page in listing.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            tags.update({f"{bucket}/{o['Key']}": o["ETag"] for o in page.get("Contents", [])})
    except Exception as exc:  # botocore's errors: the cache key must not be guessed
        raise _wrap(uri, "list", exc) from None
    missing = [i.path for i in files if i.path not in tags]
    if missing:
        raise StorageError(f"cannot list '{uri}': no ETag for {missing[0]} (it changed while listed); try again")
    return [(i.path[len(root) :], int(i.size or 0), tags[i.path]) for i in files]


def _download(fs: pafs.FileSystem, root: str, files: list[pafs.FileInfo], target: Path) -> Path:
    for info in files:
        dst = target / info.path[len(root) :].lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fs.open_input_file(info.path) as f:  # one request per file, as in read_bytes
                dst.write_bytes(f.read())
        except (OSError, pa.ArrowException) as exc:
            raise _wrap(info.path, "read", exc) from None
    return target


def _trim_folder_cache(cache: Path, keep: Path) -> None:
    """Best-effort: beyond the size cap drop the least recently used folders idle for ``FOLDER_CACHE_IDLE_S``
    (a folder another process was just handed stays), and partial downloads older than that."""
    cap = float(os.environ.get("DIFFCXR_FOLDER_CACHE_GB") or FOLDER_CACHE_GB) * 2**30
    now, entries = time.time(), []
    for entry in cache.iterdir():
        try:  # another process may rename or drop an entry while we look
            idle = now - entry.stat().st_mtime
            if ".partial-" in entry.name:
                if idle > FOLDER_CACHE_IDLE_S:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            entries.append((idle, sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()), entry))
        except OSError:
            continue
    total = sum(size for _, size, _ in entries)
    for idle, size, entry in sorted(entries, key=lambda e: -e[0]):
        if total <= cap:
            break
        if entry != keep and idle > FOLDER_CACHE_IDLE_S:
            shutil.rmtree(entry, ignore_errors=True)
            total -= size

"""Storage: the same calls on a local path and on a real S3-compatible server (moto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from diffcxr import storage
from diffcxr.errors import StorageError


def _roundtrip(root: str) -> None:
    a = storage.join(root, "dir", "a.bin")
    b = storage.join(root, "dir", "sub", "b.txt")
    storage.write_bytes(a, b"\x00\x01payload")
    storage.write_text(b, "hello ü")
    assert storage.read_bytes(a) == b"\x00\x01payload"
    assert storage.read_text(b) == "hello ü"
    assert storage.exists(a) and storage.is_file(b)
    assert storage.list_files(storage.join(root, "dir")) == [a, b]
    assert storage.list_files(storage.join(root, "dir"), suffix=".txt") == [b]
    assert storage.list_files(storage.join(root, "dir"), recursive=False) == [a]

    table = pa.table({"x": [1, 2, 3], "y": ["a", None, "c"]})
    p = storage.join(root, "t.parquet")
    storage.write_parquet(table, p)
    assert storage.read_parquet(p).equals(table)

    storage.delete(storage.join(root, "dir"))
    assert not storage.exists(a)
    assert storage.list_files(storage.join(root, "dir")) == []
    with pytest.raises(StorageError, match=r"cannot read '.*a\.bin'"):
        storage.read_bytes(a)


def test_local_roundtrip(tmp_path: Path) -> None:
    _roundtrip(str(tmp_path / "root"))


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x" / "file.bin"
    storage.write_bytes(str(target), b"1")
    storage.write_bytes(str(target), b"2")
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
    assert target.read_bytes() == b"2"


def test_file_scheme_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage.write_text("rel/x.txt", "r")
    assert storage.read_text(f"file://{tmp_path}/rel/x.txt") == "r"
    assert storage.local_path("rel/x.txt") == tmp_path / "rel" / "x.txt"


@pytest.mark.s3
def test_s3_roundtrip_against_moto(s3_bucket: str) -> None:
    _roundtrip(f"{s3_bucket}/root")
    assert storage.local_path(f"{s3_bucket}/x") is None


@pytest.mark.s3
def test_copy_between_local_and_s3(tmp_path: Path, s3_bucket: str) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    storage.copy(str(src), f"{s3_bucket}/copied/src.bin")
    storage.copy(f"{s3_bucket}/copied/src.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


@pytest.mark.s3
def test_a_remote_folder_is_downloaded_once_and_again_when_its_content_changes(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process that loads one bundle from S3 shares one download; a folder rewritten in place (same
    names and sizes, other bytes) is a new download, never the stale copy."""
    monkeypatch.setenv("DIFFCXR_FOLDER_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "bundle"
    (src / "hf").mkdir(parents=True)
    (src / "weights.pt").write_bytes(b"A" * 4096)
    (src / "hf" / "config.json").write_text("{}")
    uri = storage.put_folder(src, f"{s3_bucket}/bundle")
    first = storage.get_folder(uri)
    assert (first / "weights.pt").read_bytes() == b"A" * 4096 and (first / "hf" / "config.json").is_file()
    assert storage.get_folder(uri) == first  # the cached copy, not a second download
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name]  # no partial left behind
    fresh = storage.get_folder(uri, tmp_path / "mine")  # an explicit target is always a fresh download
    assert fresh == tmp_path / "mine" and (fresh / "weights.pt").read_bytes() == b"A" * 4096

    monkeypatch.setenv("DIFFCXR_FOLDER_CACHE_GB", "0")  # over the cap, but a recently used folder stays:
    (src / "weights.pt").write_bytes(b"B" * 4096)  # another process may just have been handed it
    storage.put_folder(src, uri)
    second = storage.get_folder(uri)
    assert second != first and (second / "weights.pt").read_bytes() == b"B" * 4096
    assert first.is_dir()

    monkeypatch.setattr(storage, "FOLDER_CACHE_IDLE_S", 0)  # once the others count as idle, only the new stays
    (src / "weights.pt").write_bytes(b"C" * 4096)
    storage.put_folder(src, uri)
    third = storage.get_folder(uri)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [third.name]
    with pytest.raises(StorageError, match="empty or does not exist"):
        storage.get_folder(f"{s3_bucket}/nothing-here")


@pytest.mark.s3
def test_s3_objects_are_visible_to_boto3(s3_bucket: str) -> None:
    """pyarrow.fs and boto3 see the same server (one endpoint setting for both)."""
    from infra.s3 import client

    storage.write_text(f"{s3_bucket}/k/v.txt", "via pyarrow")
    body = client().get_object(Bucket=s3_bucket[5:], Key="k/v.txt")["Body"].read()
    assert body == b"via pyarrow"


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match="cannot read 's3://no-such-bucket-xyz/k'"):
        storage.read_bytes("s3://no-such-bucket-xyz/k")


def test_bad_uris_are_rejected() -> None:
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        storage.resolve("gs://bucket/x")
    with pytest.raises(StorageError, match="not a valid s3://bucket/key"):
        storage.resolve("s3://")
    with pytest.raises(StorageError, match="empty URI"):
        storage.resolve("")


@pytest.mark.s3
def test_cli_storage_cp_and_ls(tmp_path: Path, s3_bucket: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text("cli")
    run = [sys.executable, "-m", "orchestration.cli"]
    out = subprocess.run([*run, "storage", "cp", str(src), f"{s3_bucket}/c/a.txt"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([*run, "storage", "ls", "-r", s3_bucket], capture_output=True, text=True)
    assert out.stdout.split() == [f"{s3_bucket}/c/a.txt"]
    out = subprocess.run([*run, "storage", "cp", f"{s3_bucket}/nope", str(src)], capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr


def test_bytes_are_stored_verbatim_whatever_the_extension(tmp_path: Path) -> None:
    """pyarrow would (de)compress '.gz' files by default; storage must not."""
    import gzip

    data = gzip.compress(b"a,b\n1,2\n")
    uri = str(tmp_path / "table.csv.gz")
    storage.write_bytes(uri, data)
    assert (tmp_path / "table.csv.gz").read_bytes() == data
    assert storage.read_bytes(uri) == data

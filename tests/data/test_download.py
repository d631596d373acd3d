"""mtlrec.data.download.fetch, exercised with file:// URLs (never the network)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from mtlrec.data.download import ChecksumError, DatasetNotFoundError, fetch, file_digest

PAYLOAD = b"73, Not in universe, 0, 0, High school graduate\n" * 1000


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "server" / "payload.txt"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def gz_source(tmp_path: Path) -> Path:
    src = tmp_path / "server" / "payload.txt.gz"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(gzip.compress(PAYLOAD, compresslevel=9, mtime=0))
    return src


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_fetch_sha256_and_md5(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "nested" / "payload.txt"  # parents are created
    got = fetch(
        source.as_uri(),
        dest,
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        md5=hashlib.md5(PAYLOAD).hexdigest().upper(),  # case-insensitive
    )
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == []


def test_fetch_checks_decompressed_md5(gz_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "payload.txt.gz"
    fetch(gz_source.as_uri(), dest, gunzip_md5=hashlib.md5(PAYLOAD).hexdigest())
    assert gzip.decompress(dest.read_bytes()) == PAYLOAD
    assert file_digest(dest, "md5", gunzip=True) == hashlib.md5(PAYLOAD).hexdigest()
    assert file_digest(dest, "sha256") == hashlib.sha256(gz_source.read_bytes()).hexdigest()


def test_checksum_mismatch_leaves_nothing_behind(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "payload.txt"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        fetch(source.as_uri(), dest, sha256=wrong)
    msg = str(err.value)
    assert "checksum mismatch for 'payload.txt'" in msg
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg and wrong in msg
    assert source.as_uri() in msg
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_mismatch_does_not_clobber_existing_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "payload.txt"
    dest.write_bytes(b"old, good content\n")
    with pytest.raises(ChecksumError):
        fetch(source.as_uri(), dest, md5="f" * 32)
    assert dest.read_bytes() == b"old, good content\n"
    assert _leftovers(tmp_path) == []


def test_decompressed_md5_mismatch_and_not_gzip(source: Path, gz_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "x.gz"
    with pytest.raises(ChecksumError, match="md5 of the decompressed content is"):
        fetch(gz_source.as_uri(), dest, gunzip_md5="0" * 32)
    with pytest.raises(ChecksumError, match="not a readable gzip file"):
        fetch(source.as_uri(), dest, gunzip_md5=hashlib.md5(PAYLOAD).hexdigest())
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_network_error_is_dataset_not_found(tmp_path: Path) -> None:
    url = (tmp_path / "server" / "missing.gz").as_uri()
    dest = tmp_path / "data" / "census-income.data.gz"
    with pytest.raises(DatasetNotFoundError) as err:
        fetch(url, dest, md5="0" * 32)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert "'census-income.data.gz'" in msg
    assert f"expected at {dest}" in msg
    assert url in msg
    assert "copy the file there by hand" in msg
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_checksum_is_required(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one checksum"):
        fetch(source.as_uri(), tmp_path / "x")
    assert not (tmp_path / "x").exists()

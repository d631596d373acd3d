"""Fetch a dataset file once, verify it, and put it in place atomically.

Why this shape:

* **Temp file + atomic rename.** A download that dies half-way (network drop, Ctrl-C, a killed
  job in a sweep) must never leave a truncated file under the final name, or the next run would
  try to parse it. The bytes go to a hidden ``.part`` file in the destination folder (same file
  system, so :func:`os.replace` is atomic) and only a verified file is renamed into place.
* **A checksum is mandatory.** Mirrors differ and servers return HTML error pages with status
  200; parsing those silently would give a wrong dataset, not an error. ``gunzip_md5`` checks the
  *decompressed* content, for files (like the UCI Census-Income ``.gz`` files) whose gzip bytes
  differ between mirrors while their content does not.
* **One clear error when the network fails.** Training machines are often offline, so a
  network failure raises :class:`DatasetNotFoundError` naming the file, where it was expected,
  the URL, and that the file can simply be copied there by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

__all__ = ["ChecksumError", "DatasetNotFoundError", "fetch", "file_digest"]

_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is neither on disk nor downloadable (says where to put it by hand)."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected checksum (nothing was written in its place)."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5", *, gunzip: bool = False) -> str:
    """Hex digest of a file's bytes, or of its gzip-decompressed content when ``gunzip``."""
    h = hashlib.new(algorithm)
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _not_found(url: str, dest: Path, err: BaseException) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"could not download {dest.name!r}: {err}. "
        f"The file was expected at {dest} and the download from {url} failed. "
        f"If this machine has no internet access, copy the file there by hand "
        f"(from {url} or any mirror with the same content) and run again."
    )


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    gunzip_md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, verify it, then atomically rename it into place.

    At least one checksum is required: ``sha256`` / ``md5`` of the downloaded bytes, and/or
    ``gunzip_md5``, the md5 of the gzip-*decompressed* content. All given checksums must match.

    Raises :class:`DatasetNotFoundError` on any network error (unreachable host, HTTP error,
    missing ``file://`` path, truncated transfer) and :class:`ChecksumError` on a mismatch or an
    unreadable gzip. In both cases ``dest`` is left untouched and no partial file remains.
    Returns ``dest`` as a :class:`~pathlib.Path`.
    """
    if not (sha256 or md5 or gunzip_md5):
        raise ValueError(f"fetch({url!r}): give at least one checksum (sha256=, md5= or gunzip_md5=)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        hashers = {name: hashlib.new(name) for name, want in (("sha256", sha256), ("md5", md5)) if want}
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (URLs come from loaders)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                raise _not_found(url, dest, e) from e
            with resp:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (http.client.HTTPException, OSError) as e:
                        raise _not_found(url, dest, e) from e
                    if not chunk:
                        break
                    for h in hashers.values():
                        h.update(chunk)
                    out.write(chunk)  # local disk errors propagate unchanged: they are not "not found"

        wanted = {"sha256": sha256, "md5": md5}
        for name, h in hashers.items():
            got = h.hexdigest()
            if got != wanted[name].lower():
                raise ChecksumError(
                    f"checksum mismatch for {dest.name!r} downloaded from {url}: {name} is {got}, "
                    f"expected {wanted[name]}. The file was not saved to {dest}; the server may have "
                    f"returned an error page or a different version. Copy a verified file there by hand."
                )
        if gunzip_md5:
            try:
                got = file_digest(tmp, "md5", gunzip=True)
            except (OSError, EOFError, zlib.error) as e:
                raise ChecksumError(
                    f"{dest.name!r} downloaded from {url} is not a readable gzip file ({e}); "
                    f"it was not saved to {dest}. Copy a verified file there by hand."
                ) from e
            if got != gunzip_md5.lower():
                raise ChecksumError(
                    f"checksum mismatch for {dest.name!r} downloaded from {url}: md5 of the decompressed "
                    f"content is {got}, expected {gunzip_md5}. The file was not saved to {dest}; "
                    f"copy a verified file there by hand."
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest

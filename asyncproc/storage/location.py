"""Where a file or folder lives: a local path, or an fsspec URL with its storage options.

One value carries both, so everything that reads the input, writes the output or keeps
a run's state takes a :class:`Location` and asks it for a :class:`Storage`, a reader or
its size, whatever the store. ``file://`` URLs and plain paths are local (and use the
local code, fsync and all); ``s3://``, ``gs://``, ``abfs://``, ``memory://``... go
through fsspec. Storage options (``--storage-option key=value``) are passed to the
file system and never written to disk: they may hold credentials.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, BinaryIO

from .._errors import ConfigError
from .localfs import LocalStorage
from .protocol import Storage

REMOTE_BUFFER = 1 << 20  # fsspec's readline costs 30-50 us a line; a 1 MiB buffer, 2 us
READ_AHEAD = 1 << 16  # a ranged reader fetches this much past each read it cannot serve
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def is_url(text: str) -> bool:
    """Whether ``text`` names a remote store (``scheme://``) rather than a local path."""
    return "://" in text and not text.startswith("file://")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value``; ``true`` / ``false`` become booleans, everything else stays text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--storage-option takes KEY=VALUE, got {text!r}")
    lowered = value.strip().lower()
    return key.strip(), {"true": True, "false": False}.get(lowered, value)


def storage_options(pairs: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(pairs or {})


class Location:
    """A local path or an fsspec URL, with the storage options for its file system."""

    def __init__(self, where: str | os.PathLike[str], options: Mapping[str, Any] | None = None):
        text = os.fspath(where)
        if text.startswith("file://"):
            text = text[len("file://") :]
        self.options = storage_options(options)
        if is_url(text):
            self.url = text.rstrip("/")
            self.local: Path | None = None
        else:
            self.local = Path(text)  # as given: messages and local code see what was asked
            self.url = os.path.realpath(self.local)  # a link loop is reported where used

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __str__(self) -> str:
        return self.url

    # -- names -----------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.local is not None

    @property
    def path(self) -> Path:
        """The local path; ValueError for a URL (callers check :attr:`is_local` first)."""
        if self.local is None:
            raise ValueError(f"{self.url} is not a local path")
        return self.local

    @property
    def protocol(self) -> str:
        return "file" if self.local is not None else self.url.split("://", 1)[0]

    @property
    def pure(self) -> PurePosixPath:
        """The path part, for its name and suffix."""
        return PurePosixPath(self.url.split("://", 1)[-1])

    @property
    def given(self) -> PurePath:
        """The path as the caller gave it (a link's name, not its target's): its suffix
        is the one that chooses a format."""
        return self.local if self.local is not None else self.pure

    @property
    def name(self) -> str:
        return self.pure.name

    def child(self, name: str) -> Location:
        if self.local is not None:
            return Location(self.local / name, self.options)
        return Location(f"{self.url}/{name}", self.options)

    @property
    def parent(self) -> Location:
        if self.local is not None:
            return Location(self.local.parent, self.options)
        scheme, rest = self.url.split("://", 1)
        head = rest.rpartition("/")[0] or rest
        return Location(f"{scheme}://{head}", self.options)

    @property
    def shown(self) -> str:
        """How a summary names it: the local path as given, or the URL."""
        return str(self.local) if self.local is not None else self.url

    # -- the file system -------------------------------------------------------------

    @cached_property
    def fs(self) -> Any:
        """The fsspec file system; a clear error for a missing extra or a bad option."""
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with every remote extra
            raise ConfigError(_extra_hint(self.protocol)) from None
        try:
            return fsspec.filesystem(self.protocol, **self.options)  # one client per options
        except ImportError:
            raise ConfigError(_extra_hint(self.protocol)) from None
        except ValueError as exc:
            if "Protocol not known" in str(exc):
                raise ConfigError(f"unknown storage {self.protocol}:// in {self.url}") from None
            raise ConfigError(f"bad --storage-option for {self.url}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"bad --storage-option for {self.url}: {exc}") from None

    @property
    def key(self) -> str:
        """The path inside the file system (no protocol)."""
        return str(self.fs._strip_protocol(self.url))

    def storage(self) -> Storage:
        """Everything below this folder, behind the storage protocol."""
        if self.local is not None:
            return LocalStorage(self.local)
        from .fsspecfs import FsspecStorage  # loaded for URLs only

        return FsspecStorage(self.fs, self.key)

    def open_read(self, size: int | None = None) -> BinaryIO:
        """A forward reader: a local file, or a remote one behind a 1 MiB buffer.

        ``size`` (when known) spares the store a HEAD request; nothing past it is read.
        """
        if self.local is not None:
            return self.local.open("rb")
        raw = self.fs.open(self.key, "rb", block_size=REMOTE_BUFFER, cache_type="none", size=size)
        return io.BufferedReader(raw, buffer_size=REMOTE_BUFFER)

    def open_samples(self, size: int | None = None) -> BinaryIO:
        """A reader for a few small reads far apart: one ranged GET per read."""
        if self.local is not None:
            return self.local.open("rb")
        opened: BinaryIO = self.fs.open(
            self.key, "rb", block_size=4096, cache_type="none", size=size
        )
        return opened

    def open_ranged(self, size: int | None = None) -> BinaryIO:
        """A reader for short reads at ascending offsets, close together or far apart.

        Each read the reader cannot serve is one ranged GET of what is asked plus
        :data:`READ_AHEAD` bytes, kept for the reads that follow nearby: one GET per
        scattered read, a few for many reads close together.
        """
        if self.local is not None:
            return self.local.open("rb")
        opened: BinaryIO = self.fs.open(
            self.key, "rb", block_size=READ_AHEAD, cache_type="readahead", size=size
        )
        return opened

    def exists(self) -> bool:
        """Whether a file (or an object) is there now."""
        if self.local is not None:
            return self.local.is_file()
        return bool(self.fs.exists(self.key))

    def info(self) -> dict[str, Any]:
        """The object's size and version (``mtime_ns``); FileNotFoundError if missing."""
        if self.local is not None:
            st = self.local.stat()
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "type": "file"}
        from .fsspecfs import list_prefix  # loaded for URLs only

        key = self.key
        found = list_prefix(self.fs, key)
        info = found.get(key)
        if info is None:
            if any(str(k).startswith(key + "/") for k in found):
                return {"size": 0, "mtime_ns": 0, "type": "directory"}
            raise FileNotFoundError(errno.ENOENT, "no such object", self.url)
        return {"size": int(info.get("size") or 0), "mtime_ns": _version(info), "type": "file"}


def _version(info: dict[str, Any]) -> int:
    """A number that changes when the object is rewritten: its modification time in ns."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return int(value.timestamp() * 1e9)
        try:
            return int(float(value) * 1e9)
        except (TypeError, ValueError):
            continue
    return 0


def _extra_hint(protocol: str) -> str:
    extra = EXTRAS.get(protocol)
    if extra is None:
        return f"the {protocol}:// storage needs its fsspec package (adlfs for abfs://)"
    return f"the {protocol}:// storage needs an extra: pip install 'asyncproc[{extra}]'"

"""The input and the output when either may be an fsspec URL.

Local paths go to the functions that always served them (:mod:`.planning`,
:mod:`.merge`), unchanged. A URL input is identified by its size, its object version
(modification time) and the same sampled fingerprint, each sample one ranged GET; it
is planned and read forward through a 1 MiB buffered reader (fsspec's own ``readline``
costs 30-50 us a line, the buffer 2 us). A URL output is written as one streamed
object (a multipart upload on S3): it appears whole when the upload completes, or not
at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, cast

import aiofiles
import anyio
from aiofiles.threadpool.binary import AsyncBufferedReader

from .._errors import ConfigError, InputError, OutputError
from ..runs.rundir import failed_items_path
from ..storage.location import Location, is_url
from ..storage.protocol import Storage
from ..storage.records import InputIdentity, UnitCheckpoint
from . import planning
from .merge import committed_chunks, write_json_array, write_json_lines
from .units import UnitSpec


def check_input(source: Location) -> None:
    """One InputError for every way the input is unusable."""
    if source.is_local:
        planning.check_input(source.path)
        return
    try:
        info = source.info()
    except FileNotFoundError:
        raise InputError(f"input {source} does not exist; check the --input URL") from None
    except TypeError as exc:  # fsspec passes unknown options on to the first request
        raise ConfigError(f"bad --storage-option for {source}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read input {source}: {exc}") from exc
    if info["type"] == "directory":
        raise InputError(f"input {source} is a folder; give a line-oriented file")


def check_remote_output(output: Location, source: Location) -> None:
    """What can be checked of a URL output before any work: that it is not the input."""
    if output == source:
        raise ConfigError(f"output {output} is the input; choose another --output")
    try:
        output.fs.exists(output.key)
    except TypeError as exc:
        raise ConfigError(f"bad --storage-option for {output}: {exc}") from None
    except OSError as exc:
        raise OutputError(f"cannot reach output {output}: {exc}") from exc


def identify(source: Location) -> InputIdentity:
    """Describe the input as it is now, for planning or for a resume check."""
    if source.is_local:
        return planning.identify(source.path)
    check_input(source)
    return identify_object(source, source.info())


def identify_object(target: Location, info: Mapping[str, Any]) -> InputIdentity:
    """An object's identity from its ``info()``: size, version, sampled fingerprint."""
    with target.open_samples(info["size"]) as fh:
        digest = planning.fingerprint(fh, info["size"])
    return InputIdentity(target.url, info["size"], info["mtime_ns"], digest)


def change_in(then: InputIdentity, options: Mapping[str, Any] | None = None) -> str | None:
    """What changed in the input since ``then`` was taken, or None if nothing did."""
    if not is_url(then.path):
        return planning.change_in(then)
    return planning.difference(then, identify(Location(then.path, options)))


def plan_input(source: Location, workers_for: Callable[[int], int], fmt: str) -> planning.Planned:
    """Plan the input into ``workers_for(size)`` units, as :func:`planning.plan` does."""
    if source.is_local:
        return planning.plan(source.path, workers_for(source.path.stat().st_size), fmt)
    identity = identify(source)
    with source.open_read(identity.size) as fh:
        return planning.plan_open(identity, fh, workers_for(identity.size), fmt)


class _RemoteReader:
    """The input at a URL with the two calls :class:`~.reader.LineReader` makes, each
    one a worker-thread round trip over a 1 MiB buffer."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    async def read(self, size: int) -> bytes:
        return await anyio.to_thread.run_sync(self._fh.read, size)

    async def seek(self, offset: int) -> int:
        return await anyio.to_thread.run_sync(self._fh.seek, offset)


@asynccontextmanager
async def open_input(spec: UnitSpec) -> AsyncIterator[AsyncBufferedReader]:
    """The unit's input, open for reading forward: aiofiles locally, buffered remotely.

    The open itself is shielded: it runs in a worker thread, and a cancellation that
    arrived meanwhile (another unit failing, a simulated crash) would drop the file it
    opened without closing it.
    """
    if not is_url(spec.input_path):
        with anyio.CancelScope(shield=True):
            fh = await aiofiles.open(Path(spec.input_path), "rb")
        try:
            yield fh
        finally:
            with anyio.CancelScope(shield=True):
                await fh.close()
        return
    source = Location(spec.input_path, spec.storage_options)
    with anyio.CancelScope(shield=True):
        remote: BinaryIO = await anyio.to_thread.run_sync(source.open_read, spec.end)
    try:
        yield cast(AsyncBufferedReader, _RemoteReader(remote))
    finally:
        await anyio.to_thread.run_sync(remote.close)


def failed_location(output: Location) -> Location:
    """Where the run's failed items go: ``<output stem>.failed.jsonl`` beside the output,
    a file or an object (see :func:`~asyncproc.runs.rundir.failed_items_path`)."""
    return output.parent.child(failed_items_path(Path(output.name)).name)


def merge_remote(
    storage: Storage, checkpoints: list[UnitCheckpoint], output: Location, as_array: bool
) -> str | None:
    """The merge of :func:`.merge.merge` into objects: the output, then the failed items."""
    publish_object(output, committed_chunks(storage, checkpoints, dead=False), as_array)
    failed = failed_location(output)
    if any(c.failed for c in checkpoints):
        publish_object(failed, committed_chunks(storage, checkpoints, dead=True), False)
        return failed.url
    remove_object(failed)
    return None


def publish_object(target: Location, chunks: Iterable[bytes], as_array: bool) -> None:
    """One streamed object: on S3 a multipart upload that completes only at the end.

    fsspec completes an upload when its file is closed, even by an error leaving a
    ``with`` block: an error on the way abandons the upload instead, so the object is
    the old one or the whole new one, never a prefix of it.
    """
    fh = target.fs.open(target.key, "wb")
    try:
        (write_json_array if as_array else write_json_lines)(chunks, fh)
    except BaseException:
        _abandon(fh)
        raise
    fh.close()


def _abandon(fh: Any) -> None:
    """Throw an unfinished upload away (S3 aborts its multipart upload); close nothing
    that would complete it."""
    with suppress(Exception):
        fh.discard()
    with suppress(AttributeError):  # fsspec's buffered files: close() then commits nothing
        fh.closed = True


def remove_object(target: Location) -> None:
    """Delete the object if it is there: done twice, the same as once."""
    if target.fs.exists(target.key):
        target.fs.rm_file(target.key)

"""A real S3 API on loopback for tests: moto's server in a thread of the test process.

One server per test session (:func:`moto_server` in ``conftest``); each test takes a
fresh bucket, so tests never see each other's objects. Clients reach it with the
storage options :func:`s3_options` returns, exactly as a user would pass them with
``--storage-option``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_buckets = itertools.count()


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and a way to make buckets on it."""

    endpoint: str

    def options(self) -> dict[str, Any]:
        """The storage options a client needs: endpoint and (fake) credentials."""
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}

    def bucket(self) -> str:
        """A new, empty bucket; its name."""
        import s3fs

        name = f"asyncproc-test-{os.getpid()}-{next(_buckets)}"
        s3fs.S3FileSystem(skip_instance_cache=True, **self.options()).mkdir(name)
        return name


def serve() -> Iterator[S3Server]:
    """Start moto's threaded server on 127.0.0.1 (a free port), stop it afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()

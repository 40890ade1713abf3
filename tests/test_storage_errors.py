"""An object store's own errors in the coordinator are one line that says what to do."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from conftest import run_cli, write_lines
from faultkit import refused

pytest.importorskip("s3fs")

NO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
}  # fmt: skip


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **NO_CREDENTIALS, "AWS_MAX_ATTEMPTS": "1", **extra}


def test_no_credentials_for_the_input_is_one_line(tmp_path: Path) -> None:
    endpoint = f"endpoint_url=http://127.0.0.1:{_closed_port()}"
    proc = run_cli("run", "--input", "s3://bucket/in.txt", "--output", tmp_path / "out.jsonl",
                   "--storage-option", endpoint, env=_env())  # fmt: skip
    refused(proc, 1, "no credentials", "--storage-option key=")


def test_an_unreachable_endpoint_for_the_output_is_one_line(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", ["a", "b"])
    endpoint = f"endpoint_url=http://127.0.0.1:{_closed_port()}"
    proc = run_cli("run", "--input", source, "--output", "s3://bucket/out.jsonl",
                   "--storage-option", endpoint,
                   env=_env(AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret"))  # fmt: skip
    refused(proc, 1, "cannot reach the object store", "endpoint_url")

"""Where Ray Train and Tune keep results and checkpoints: a folder, or an S3-compatible URI.

On a multi-node cluster a run's workers sit on different machines, so checkpoints need
storage every node reaches (DESIGN §5): a shared folder, or ``s3://bucket/prefix`` — with
``?endpoint_override=host:port&scheme=http`` for MinIO, moto or Ceph. Credentials come from
the driver's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``~/.aws``) and travel
inside the filesystem object, because environment variables of the driver do not reach
trials on a ``ray start`` cluster.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.errors import UserError


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


@dataclass
class Storage:
    """``path`` for Ray's ``storage_path`` and, for a URI, the pyarrow filesystem to pass beside it."""

    path: str
    filesystem: Any = None
    uri: str | None = None

    def join(self, *parts: str) -> str:
        return ("/".join([self.path.rstrip("/"), *parts]) if self.filesystem is not None
                else str(Path(self.path, *parts)))

    def child(self, *parts: str) -> "Storage":
        """The same storage, rooted at a sub-folder (created for a plain folder)."""
        path = self.join(*parts)
        if self.filesystem is None:
            Path(path).mkdir(parents=True, exist_ok=True)
        return Storage(path, self.filesystem, self.uri)

    def download(self, remote: str, local: Path) -> Path:
        """Copy a folder from this storage to ``local`` (a no-op path for a plain folder)."""
        if self.filesystem is None:
            return Path(remote)
        import pyarrow.fs as pafs

        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(remote, str(local), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        return local

    def read_bytes(self, remote: str) -> bytes:
        """A file's bytes from this storage (OSError when it is not there)."""
        if self.filesystem is None:
            return Path(remote).read_bytes()
        with self.filesystem.open_input_stream(remote) as f:
            return f.read()

    def write_bytes(self, remote: str, data: bytes) -> None:
        """Write a file to this storage, creating its folder."""
        parent = remote.rsplit("/", 1)[0] if self.filesystem is not None else str(Path(remote).parent)
        if self.filesystem is None:
            Path(parent).mkdir(parents=True, exist_ok=True)
            Path(remote).write_bytes(data)
            return
        self.filesystem.create_dir(parent, recursive=True)
        with self.filesystem.open_output_stream(remote) as f:
            f.write(data)

    def exists(self, remote: str) -> bool:
        if self.filesystem is None:
            return Path(remote).exists()
        import pyarrow.fs as pafs

        return self.filesystem.get_file_info(remote).type != pafs.FileType.NotFound


def _s3(uri: str) -> Storage:
    import pyarrow.fs as pafs

    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint_override", "scheme", "region"}
    if unknown:
        raise UserError(f"train.storage_path: {uri}: unknown URI option(s) {sorted(unknown)} "
                        "(endpoint_override, scheme, region)")
    kwargs: dict[str, Any] = {"endpoint_override": query.get("endpoint_override"),
                              "scheme": query.get("scheme", "https"),
                              "connect_timeout": 5.0,
                              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
                              "region": query.get("region", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))}
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    fs = pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})
    path = (parts.netloc + parts.path).rstrip("/")
    if not parts.netloc:
        raise UserError(f"train.storage_path: {uri}: no bucket")
    try:
        fs.create_dir(path, recursive=True)
        fs.get_file_info(path)
    except OSError as exc:
        raise UserError(f"train.storage_path: {uri}: cannot reach the bucket ({str(exc).splitlines()[0]})") from None
    return Storage(path, fs, uri)


def resolve_storage(path_or_uri: str | os.PathLike) -> Storage:
    """A checked storage location; a folder is created, a bucket must answer."""
    text = str(path_or_uri)
    if not is_uri(text):
        p = Path(text).expanduser().resolve()
        p.mkdir(parents=True, exist_ok=True)
        return Storage(str(p))
    scheme = urlsplit(text).scheme
    if scheme in ("s3", "s3a"):
        return _s3(text)
    if scheme == "file":
        return resolve_storage(urlsplit(text).path)
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except Exception as exc:
        raise UserError(f"train.storage_path: {text}: {exc}") from None
    return Storage(path, fs, text)

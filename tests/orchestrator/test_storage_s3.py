"""Storage's small-file reads and writes on a plain folder and on a real S3-compatible server (moto on
127.0.0.1): the files a sweep keeps beside its Train runs (a trial's own error, the Train run's
snapshot) go through them, so a retried or resumed trial finds them on either."""
from __future__ import annotations

import pytest
from servers import s3_server

from orchestrator.storage import resolve_storage
from orchestrator.sweep.failures import OWN_ERROR_FILE, note_own_error, noted_own_error


def _roundtrip(storage) -> None:
    with pytest.raises(OSError):
        storage.read_bytes(storage.join("t1", "nothing.json"))
    storage.write_bytes(storage.join("t1", "deep", "x.bin"), b"\x00abc")
    assert storage.read_bytes(storage.join("t1", "deep", "x.bin")) == b"\x00abc"
    assert storage.exists(storage.join("t1", "deep", "x.bin"))
    assert noted_own_error(storage, "t2") is None
    note_own_error(storage, "t2", "ValueError: bad config")
    assert noted_own_error(storage, "t2") == "ValueError: bad config"


def test_small_files_on_a_plain_folder(tmp_path):
    _roundtrip(resolve_storage(tmp_path / "runs"))


@pytest.mark.integration
def test_small_files_on_an_s3_compatible_server(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with s3_server(tmp_path) as endpoint:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("dance-small")
        storage = resolve_storage(f"s3://dance-small/sweeps?endpoint_override={endpoint}&scheme=http")
        assert storage.filesystem is not None
        _roundtrip(storage)
        assert fs.get_file_info(f"dance-small/sweeps/t2/{OWN_ERROR_FILE}").type == pafs.FileType.File

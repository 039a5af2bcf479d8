"""A named pipe where a file is expected is named as what it is, never opened: reading one
blocks until something writes to it, for ever in a batch job."""

from __future__ import annotations

import os
import threading

import pytest

from worldboot.data.formats import load_any
from worldboot.data.schema import read_manifest
from worldboot.errors import DataError
from worldboot.images import open_image

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def _within(seconds: float, fn, *args):
    """``fn(*args)``'s exception, failing the test if it does not return in ``seconds``."""
    got: list[BaseException | None] = [None]

    def call():
        try:
            fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            got[0] = err

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} blocked on a named pipe"
    return got[0]


def test_an_image_that_is_a_pipe_is_refused_not_read(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    err = _within(10, open_image, fifo)
    assert isinstance(err, DataError) and str(err) == f"cannot read image {fifo}: it is not a regular file"
    err = _within(10, open_image, tmp_path)
    assert isinstance(err, DataError) and "it is a folder" in str(err)


def test_a_data_file_that_is_a_pipe_is_named_as_one(tmp_path):
    fifo = tmp_path / "m.jsonl"
    os.mkfifo(fifo)
    for reader in (read_manifest, load_any):
        err = _within(10, reader, fifo)
        assert isinstance(err, DataError), err
        assert str(err) == f"{fifo} is neither a file nor a folder (a named pipe or a device)"

"""Progress bars of local epochs: drawn on a terminal, nothing otherwise."""

import os
import pty

from client.progress import EpochProgress
from tests.support.terminal import read_available


def test_bar_drawn_on_terminal():
    primary, secondary = pty.openpty()
    stream = os.fdopen(secondary, "w")
    progress = EpochProgress("books", stream)

    with progress.epochs("round 2", 3) as advance:
        for epoch, loss in ((1, 4.5), (2, 4.1), (3, 3.9)):
            advance(epoch, loss)
    stream.close()
    output = read_available(primary)
    os.close(primary)

    assert progress.live
    assert "books round 2" in output
    assert "3/3" in output
    assert "3.9000" in output


def test_nothing_drawn_off_terminal():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    progress = EpochProgress("books", stream)

    with progress.epochs("round 2", 3) as advance:
        advance(1, 4.5)
    stream.close()
    output = read_available(read_end)
    os.close(read_end)

    assert not progress.live
    assert output == ""

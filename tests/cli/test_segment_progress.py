"""``spineseg segment`` draws a progress bar on a terminal only."""

import io
import sys

from spineseg.cli.segment_cmd import _progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_into_a_pipe_or_file(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with _progress_bar("segment ct.nii.gz") as progress:
        assert progress is None
    assert sys.stderr.getvalue() == ""


def test_bar_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress_bar("segment ct.nii.gz") as progress:
        progress(0.5, "model")
        assert "segment ct.nii.gz" in terminal.getvalue() and "50%" in terminal.getvalue()

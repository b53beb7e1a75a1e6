"""Muxing on a worker thread (media/background_writer.py): the same video as writing in the caller's thread,
errors and cancellations raised in the caller's thread, nothing left behind on failure."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest
import torch

from magicinfinite_core.cancellation import cancel_check
from magicinfinite_core.media.background_writer import BackgroundWriter
from magicinfinite_core.media.stream_mux import FragmentedVideoWriter
from magicinfinite_core.media.video_io import partial_path


def _chunks(n: int = 5, frames: int = 9, size: int = 48) -> list[torch.Tensor]:
    """Float chunks [3, frames, size, size] in [-1, 1], as the decoder hands them over: a moving gradient."""
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(n):
        t = torch.arange(frames, dtype=torch.float32).view(1, -1, 1, 1) + k * frames
        y = torch.linspace(-1, 1, size).view(1, 1, -1, 1)
        base = torch.sin(3 * y + 0.2 * t) * 0.8 + 0.1 * torch.rand(3, frames, size, size, generator=g)
        out.append(base.expand(3, frames, size, size).clamp(-1, 1).contiguous())
    return out


def _decoded(path) -> tuple[np.ndarray, list[int]]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        sizes = [p.size for p in c.demux(video=0) if p.size]
    return frames, sizes


def test_the_worker_writes_the_same_video_as_the_callers_thread(tmp_path):
    """Same chunks through a FragmentedVideoWriter directly and through a BackgroundWriter around one: the
    same packets (sizes), the same decoded frames, the same audio; `on_written` ran once per chunk: for the
    first in the caller's thread (the first frame is not kept waiting), then in the worker."""
    chunks = _chunks()
    wav = (np.sin(np.linspace(0, 900, 16000 * 2)) * 0.3).astype(np.float32)
    direct, queued = tmp_path / "direct.mp4", tmp_path / "queued.mp4"
    with FragmentedVideoWriter(direct, 48, 48, audio=(wav, 16000)) as w:
        for chunk in chunks:
            w.write(chunk)
    calls: list[str] = []
    with BackgroundWriter(FragmentedVideoWriter(queued, 48, 48, audio=(wav, 16000)),
                          on_written=lambda: calls.append(threading.current_thread().name)) as w:
        for chunk in chunks:
            w.write(chunk)
    assert calls == ["MainThread"] + ["magicinfinite-mux"] * (len(chunks) - 1)  # the first frames: at once
    (a, sa), (b, sb) = _decoded(direct), _decoded(queued)
    assert sa == sb and a.shape == (45, 48, 48, 3) and np.array_equal(a, b)
    with av.open(str(direct)) as c1, av.open(str(queued)) as c2:
        assert [p.size for p in c1.demux(audio=0)] == [p.size for p in c2.demux(audio=0)]
    assert not partial_path(queued).exists()


def test_an_encoding_error_comes_back_to_the_caller_and_nothing_more_is_encoded(tmp_path):
    """A chunk of the wrong size fails in the worker; the caller gets that error from a later write or from
    close, the chunks after it are not encoded, and on the way out the writer's abort keeps the partial file
    (fragments play)."""
    out = tmp_path / "bad.mp4"
    inner = FragmentedVideoWriter(out, 48, 48)
    good = _chunks(2)
    with pytest.raises(ValueError, match="frames must be uint8"):
        with BackgroundWriter(inner) as w:
            w.write(good[0])
            w.write(torch.zeros(3, 4, 32, 32))  # 32 px frames into a 48 px video
            for _ in range(20):
                w.write(good[1])
    assert inner.frames_written == 9 and not out.exists()  # the first chunk only; no finished video
    with av.open(str(partial_path(out))) as c:  # the partial file keeps what was written (it plays), as abort does
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_a_cancellation_installed_by_the_caller_stops_the_worker(tmp_path):
    """The worker runs in the caller's context: the cancel check installed around the run is polled before
    every frame it encodes, and the cancellation is raised in the caller's thread."""

    class Cancelled(Exception):
        pass

    polls = []

    def check() -> None:
        polls.append(threading.current_thread().name)
        if len(polls) > 12:
            raise Cancelled

    out = tmp_path / "cancel.mp4"
    inner = FragmentedVideoWriter(out, 48, 48)
    with cancel_check(check), pytest.raises(Cancelled):
        with BackgroundWriter(inner) as w:
            for chunk in _chunks(4):
                w.write(chunk)
    assert "magicinfinite-mux" in polls and inner.frames_written == 12


def test_an_error_in_the_last_chunk_comes_back_from_close_and_the_file_is_aborted(tmp_path):
    out = tmp_path / "last.mp4"
    inner = FragmentedVideoWriter(out, 48, 48)
    w = BackgroundWriter(inner)
    w.write(_chunks(1)[0])
    w.write(torch.zeros(3, 2, 32, 32))
    with pytest.raises(ValueError, match="frames must be uint8"):
        w.close()
    assert inner.container is None and not out.exists() and partial_path(out).exists()


def test_a_closed_writer_refuses_more_frames(tmp_path):
    w = BackgroundWriter(FragmentedVideoWriter(tmp_path / "v.mp4", 48, 48))
    w.write(_chunks(1)[0])
    assert w.close() == tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="closed"):
        w.write(_chunks(1)[0])

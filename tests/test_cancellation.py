"""Issue 29 case 18: an interrupt lands inside the long loops, not only between sampler windows and
decode chunks (magicinfinite_core/cancellation.py).

Each test installs a check that raises once a flag is up, and raises the flag from inside the loop
(a block hook, the decode's progress callback, or the n-th poll): the work must stop at the next
poll, with nothing left on disk. No timing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicinfinite_core.cancellation import cancel_check, check_cancelled
from magicinfinite_core.config import dit_preset
from magicinfinite_core.media import motion_autoencoder as mae
from magicinfinite_core.media.motion_autoencoder import (
    MotionAutoencoder,
    MotionAutoencoderConfig,
    MotionReference,
)
from magicinfinite_core.media.video_io import VideoWriter, decode_to_mp4, partial_path
from magicinfinite_core.models.dit import MagicInfiniteDiT

from .test_dit import tiny_inputs


class Cancelled(Exception):
    """What the test's check raises (ComfyUI's is InterruptProcessingException)."""


class Flag:
    """A cancel check: raises once `up` is set; counts the polls made after that."""

    def __init__(self, after_polls: int | None = None) -> None:
        self.up = False
        self.polls = 0
        self.polls_after_up = 0
        self.after_polls = after_polls  # raise the flag by itself at this poll (the loop's n-th iteration)

    def __call__(self) -> None:
        self.polls += 1
        if self.after_polls is not None and self.polls >= self.after_polls:
            self.up = True
        if self.up:
            self.polls_after_up += 1
            raise Cancelled


def test_no_check_installed_is_a_no_op_and_scopes_nest():
    check_cancelled()  # nothing installed: returns
    outer, inner = Flag(), Flag()
    with cancel_check(outer):
        with cancel_check(inner):
            check_cancelled()
        check_cancelled()
    check_cancelled()
    assert (outer.polls, inner.polls) == (1, 1)


def test_dit_forward_stops_at_the_next_block():
    """A forward of a huge model is one long call: the DiT polls between blocks."""
    cfg = dit_preset("tiny")
    model = MagicInfiniteDiT(cfg).eval()
    ran: list[str] = []
    for name, block in [*[(f"double{i}", b) for i, b in enumerate(model.double_blocks)],
                        *[(f"single{i}", b) for i, b in enumerate(model.single_blocks)]]:
        block.register_forward_hook(lambda m, a, o, name=name: ran.append(name))
    flag = Flag()
    model.double_blocks[0].register_forward_hook(lambda m, a, o: setattr(flag, "up", True))
    total = len(model.double_blocks) + len(model.single_blocks)
    assert total >= 3
    with cancel_check(flag), torch.no_grad(), pytest.raises(Cancelled):
        model(**tiny_inputs(cfg), speaker_mask=torch.ones(1, 2, 3, 4, 4))
    assert ran == ["double0"] and flag.polls_after_up == 1  # stopped at the very next block


def test_motion_decode_polls_between_frame_batches(monkeypatch):
    """A decode chunk at 4096x4096 is dozens of huge frames: the motion decoder polls per batch."""
    monkeypatch.setattr(mae, "DECODE_BATCH_PIXELS", 64 * 64)  # one frame per batch at this test's 64x64
    ae = MotionAutoencoder(MotionAutoencoderConfig())
    z = torch.zeros(1, ae.cfg.latent_channels, 5, 4, 4)  # 17 frames
    portrait = MotionReference.whole(torch.rand(1, 3, 64, 64) * 2 - 1)
    full = ae.decode(z, portrait)
    assert full.shape == (1, 3, 17, 64, 64) and torch.allclose(full[0, :, 0], portrait.image[0])
    flag = Flag(after_polls=3)
    with cancel_check(flag), pytest.raises(Cancelled):
        ae.decode(z, portrait)
    assert flag.polls == 3  # two frames decoded, stopped at the third poll of 17


def test_decode_and_mux_stop_mid_chunk_and_leave_no_file(tmp_path):
    """The flag goes up in the decode's progress callback after chunk 1 (2 latent frames = 5 frames);
    the writer polls before every frame, so none of them is encoded, no other chunk is decoded and
    neither the video nor its partial file is left. The writer encodes on its own thread
    (media/background_writer.py), so the flag is seen once by each thread at most."""
    ae = MotionAutoencoder(MotionAutoencoderConfig())
    portrait = MotionReference.whole(torch.rand(1, 3, 64, 64) * 2 - 1)
    z = torch.zeros(ae.cfg.latent_channels, 9, 4, 4)  # 33 frames
    flag, chunks = Flag(), []

    def progress(p) -> None:
        chunks.append(p.done)
        flag.up = True

    out = tmp_path / "v.mp4"
    with cancel_check(flag), pytest.raises(Cancelled):
        decode_to_mp4(z, ae, 33, out, chunk=2, context=1, callback=progress, portrait=portrait)
    assert chunks == [1] and 1 <= flag.polls_after_up <= 2
    assert sorted(tmp_path.iterdir()) == []  # no video, no partial file
    # the same call without the flag writes the whole video
    decode_to_mp4(z, ae, 33, out, chunk=2, context=1, portrait=portrait)
    assert out.is_file() and not partial_path(out).exists()


def test_writer_polls_before_every_frame(tmp_path):
    """Encoding one 4096x4096 frame takes seconds; a chunk of 32 took minutes before an interrupt landed."""
    frames = np.zeros((20, 32, 32, 3), np.uint8)
    out = tmp_path / "w.mp4"
    writer = VideoWriter(out, 32, 32)
    flag = Flag(after_polls=4)
    with cancel_check(flag), pytest.raises(Cancelled), writer:
        writer.write(frames)
    assert writer.frames_written == 3 and not out.exists() and not partial_path(out).exists()


def test_diffusers_decoder_polls_between_its_blocks():
    from magicinfinite_core.config import vae_preset
    from magicinfinite_core.media.streamed_decode import diffusers_decode_fn
    from magicinfinite_core.media.vae import VideoVAE

    vae = VideoVAE(vae_preset("tiny")).eval()
    decode = diffusers_decode_fn(vae)
    z = torch.zeros(1, vae.cfg.latent_channels, 2, 4, 4)
    flag = Flag(after_polls=3)
    with cancel_check(flag), torch.no_grad(), pytest.raises(Cancelled):
        decode(z)
    assert flag.polls == 3  # the mid block and its first resnet started; stopped before the next part
    with torch.no_grad():
        assert decode(z).shape[2] == 5  # no check installed: the hooks do nothing


def test_face_detection_polls_between_tiles():
    """No face in a large picture: the detector tries dozens of tiles; each one polls."""
    from magicinfinite_core.inputs.masks import FaceDetector

    noise = np.random.default_rng(0).integers(0, 255, (768, 768, 3), dtype=np.uint8)
    flag = Flag(after_polls=3)
    with FaceDetector(model="full") as det, cancel_check(flag), pytest.raises(Cancelled):
        det.detect(noise)
    assert flag.polls == 3


def test_large_tensor_portrait_reduction_polls_per_strip():
    from magicinfinite_core.inputs.masks import bounded_image

    big = torch.rand(1, 2400, 300, 3)  # pooled by 3 in strips of 192 rows
    flag = Flag(after_polls=2)
    with cancel_check(flag), pytest.raises(Cancelled):
        bounded_image(big, max_side=800)
    assert flag.polls == 2

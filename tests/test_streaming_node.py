"""The sampler node in a real ComfyUI 0.3.75 shows previews of finished frames while it runs
(wavefront order, ComfyUI's own preview messages), and still writes the same video."""

from __future__ import annotations

import pytest

from .comfyui_server import magic_workflow, write_wav

pytestmark = pytest.mark.comfyui


def test_sampler_node_sends_previews_of_finished_frames(comfyui_server, magic_test_bundle):
    write_wav(comfyui_server.server.input_dir / "mi_voice_stream_3s.wav", seconds=3.0)
    wf = magic_workflow("single_speaker", magic_test_bundle, "mi_voice_stream_3s.wav",
                        **{"7.filename_prefix": "mi_stream/preview"})
    result = comfyui_server.run(wf, timeout=300)
    assert result.succeeded, result.history.get("status")
    # ComfyUI 0.3.75 sends a node's ProgressBar preview as event 1 (image without metadata); only the
    # sampler node of this workflow makes previews
    previews = [m for m in result.messages_of("binary") if m["event"] in (1, 4) and m.get("node_id", "6") == "6"]
    assert len(previews) >= 2 and all(p["jpeg"] for p in previews)  # finished frames, sent while sampling
    prog = [d for d in result.messages_of("progress") if d.get("node") == "6"]
    assert prog and prog[-1]["value"] == prog[-1]["max"]

"""How much of the world's smile, frown and surprise does the DiT put in its latent? (prints JSON)

Per training-world clip (animated training photographs, a still head): the clip made once per emotion from one seed
(`make_clip(controls=...)`: the same voice, crop and motion), each encoded as the caches encode it (optical flow). The
data's difference is each emotion's latent minus the neutral one's. The DiT samples the neutral clip's conditions
(its portrait and voice) once with each clip's own prompt, from the same noise; its difference is the emotion
prompt's latent minus the neutral prompt's. Reported over the flow channels: the share of the data's difference the
DiT's difference carries (its projection on it), and their size ratio (above the share: differences in other
directions, the sampling's own spread). With an expression channel (the autoencoder's `expression_channels`), also the
mouth corners' lift over each clip's second half, in face heights, per emotion: the data's and the DiT's. No decoding:
`bench/expression_chain.py` follows the latent to the video.

Usage: OMP_NUM_THREADS=1 python bench/emotion_latent.py [--model DIR] [--dit FILE] [--clips 6] [--flow-level 1]
       [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

EMOTIONS = ("neutral", "smile", "frown", "surprise")


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.config import SamplerConfig
    from magicinfinite_core.inputs.audio_features import MelExtractor
    from magicinfinite_core.sampling.predictor import WindowPredictor
    from magicinfinite_core.sampling.sampler import sample
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from magicinfinite_core.weights.checkpoints import load_state_dict
    from training.cache_encoders import MiniLMText
    from training.data.clip import ClipArrays, make_clip
    from training.data.render import WorldConfig
    from training.eval.evaluate import conditions_from_cache
    from training.preprocess import CacheSettings, cache_clip

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR), help="bundle: its base DiT, sampler and autoencoder")
    ap.add_argument("--dit", default=None, help="a DiT file to use instead of the bundle's (e.g. a training run's)")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--flow-level", type=int, choices=(0, 1), default=None,
                    help="optical flow's finest level for the data's latents (default: the autoencoder's own)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the bundle's)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    bundle = load_bundle(a.model, "cpu")
    model, vae = bundle.dit.eval(), bundle.vae
    if a.dit:
        dtype = next(model.parameters()).dtype
        model.load_state_dict({k: v.to(dtype) for k, v in load_state_dict(a.dit).items()})
    if a.flow_level is not None:
        vae.cfg = dataclasses.replace(vae.cfg, flow_finest_level=a.flow_level)
    text, audio = MiniLMText(), MelExtractor()
    settings = CacheSettings(vae_sha="", exact_flow=False)
    tokens, mask, pooled = text.encode([""])
    null = {"text_tokens": tokens[0], "text_mask": mask[0], "pooled": pooled[0]}
    steps, shift, guidance, _ = bundle.resolve_sampling(False, steps=a.steps)  # the base model as it ships
    window, overlap = bundle.resolve_windows()
    sampler = SamplerConfig(steps=steps, shift=shift, window_frames=window, overlap_frames=overlap)
    world = WorldConfig(128, 128, photo_faces=1.0, photo_face_min=0.2, photo_face_max=0.3)
    flow = torch.zeros(vae.cfg.latent_channels, dtype=torch.bool)
    flow[[s * vae.cfg.slot_channels + c for s in range(vae.cfg.temporal_compression_ratio) for c in (0, 1)]] = True
    sums = {e: [0.0, 0.0, 0.0] for e in EMOTIONS[1:]}
    lifts: dict[str, dict[str, list[float]]] = {e: {"data": [], "dit": []} for e in EMOTIONS}
    with torch.inference_mode():
        for seed in range(a.first_seed, a.first_seed + a.clips):
            items = {}
            for emotion in EMOTIONS:
                clip = make_clip(seed, "train", 33, world, controls={"emotion": emotion, "action": "still",
                                                                     "background": "static"})
                items[emotion] = cache_clip(ClipArrays("c", clip.frames, clip.audio, clip.gt, clip.meta), vae, text,
                                            audio, settings)
            base = items["neutral"]
            made = {}
            for emotion, item in items.items():
                prompt = {k: item[k] for k in ("text_tokens", "text_mask", "pooled")}
                predictor = WindowPredictor(model, conditions_from_cache({**base, **prompt}, null), guidance,
                                            dtype=next(model.parameters()).dtype)
                made[emotion] = sample(predictor, tuple(base["latent"].shape), config=sampler, seed=seed)
            if vae.cfg.expression_channels:
                for emotion in EMOTIONS:
                    for key, latent in (("data", items[emotion]["latent"]), ("dit", made[emotion])):
                        codes = vae.slot_codes(latent[None].float())[0, :, -1]  # [F, h, w] face heights
                        lifts[emotion][key].append(float(codes[codes.shape[0] // 2 :].mean()))
            for emotion in EMOTIONS[1:]:
                data = (items[emotion]["latent"] - base["latent"])[flow, 1:]  # latent frame 0 is the portrait
                dit = (made[emotion] - made["neutral"])[flow, 1:]
                s = sums[emotion]
                s[0] += float((dit * data).sum())
                s[1] += float((data * data).sum())
                s[2] += float((dit * dit).sum())
            print(f"clip {seed}: done", file=sys.stderr, flush=True)
    print(json.dumps({
        "model": a.model, "dit": a.dit, "clips": a.clips, "flow_finest_level": vae.cfg.flow_finest_level,
        "guidance": dataclasses.asdict(guidance), "steps": sampler.steps,
        "share_carried": {e: s[0] / s[1] for e, s in sums.items()},
        "size_ratio": {e: (s[2] / s[1]) ** 0.5 for e, s in sums.items()},
    } | ({"expression_lift": {e: {k: sum(v) / len(v) for k, v in d.items()} for e, d in lifts.items()},
          "expression_lift_per_clip": lifts} if vae.cfg.expression_channels else {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

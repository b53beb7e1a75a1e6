"""Fit the demo's linear causal patch autoencoder in closed form (PCA), and score its round trip.

    python -m training.fit_autoencoder --data out/world_v2 --out out/ae/autoencoder.safetensors \
        --heldout out/world_v2_heldout --patch 8 --spatial 64 --temporal 16

Why closed form: the second moments of patches are all a linear code needs, so a pass over the
training clips (seconds to minutes) gives the best linear code for them, where a CPU-trained VAE
needs hours and still blurs (DESIGN.md §11). Only the train split is read for fitting; `--heldout`
clips are only scored. The report (JSON, printed and written beside the weights) gives PSNR per
source so a user sees what the code keeps of a world clip and of a photograph.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.config import latent_frames
from magicinfinite_core.media.autoencoders import save_autoencoder
from magicinfinite_core.media.patch_autoencoder import PatchAutoencoder, PatchAutoencoderConfig, patchify
from training.data.clip import list_clips, read_clip
from training.data.tensors import frames_to_tensor


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] images (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).square().mean())
    return 10.0 * float(np.log10(4.0 / max(mse, 1e-12)))


def clip_videos(roots: Iterable[str | Path], split: str | None = "train") -> Iterator[tuple[str, torch.Tensor]]:
    """(clip name, [3, F, H, W] in [-1, 1]) for every clip of `split` (None: every clip) under the roots."""
    for root in roots:
        for d in list_clips(root):
            c = read_clip(d)
            if split is not None and c.meta.get("split", "train") != split:
                continue
            yield d.name, frames_to_tensor(c.frames)


class MomentAccumulator:
    """Running first and second moments (float64) of the spatial patches and the within-group detail."""

    def __init__(self, cfg: PatchAutoencoderConfig) -> None:
        n, r = cfg.patch_values, cfg.temporal_compression_ratio
        self.cfg = cfg
        self.s1 = torch.zeros(n, dtype=torch.float64)
        self.s2 = torch.zeros(n, n, dtype=torch.float64)
        self.count = 0
        self.t2 = torch.zeros(r * n, r * n, dtype=torch.float64)
        self.groups = 0

    def add(self, video: torch.Tensor) -> None:
        p, r, n = self.cfg.patch, self.cfg.temporal_compression_ratio, self.cfg.patch_values
        x = patchify(video[None].float(), p)[0].double()  # [F, h, w, n]
        flat = x.reshape(-1, n)
        self.s1 += flat.sum(0)
        self.s2 += flat.T @ flat
        self.count += flat.shape[0]
        g = (x.shape[0] - 1) // r
        if g:
            grp = x[1 : 1 + g * r].reshape(g, r, *x.shape[1:])
            d = (grp - grp.mean(1, keepdim=True)).permute(0, 2, 3, 1, 4).reshape(-1, r * n)
            self.t2 += d.T @ d
            self.groups += d.shape[0]

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        if self.count == 0:
            raise ValueError("no training frames to fit the autoencoder on (is --data the train split?)")
        mean = self.s1 / self.count
        cov = self.s2 / self.count - torch.outer(mean, mean)
        ev, vec = torch.linalg.eigh(cov)
        order = ev.argsort(descending=True)
        spatial = vec[:, order[: self.cfg.spatial_channels]].T
        kept_s = float(ev[order[: self.cfg.spatial_channels]].sum() / ev.clamp_min(0).sum())
        ct = self.cfg.temporal_channels
        if self.groups and ct:
            tev, tvec = torch.linalg.eigh(self.t2 / self.groups)
            tor = tev.argsort(descending=True)
            temporal = tvec[:, tor[:ct]].T
            kept_t = float(tev[tor[:ct]].sum() / tev.clamp_min(0).sum().clamp_min(1e-12))
        else:
            temporal = torch.zeros(ct, self.cfg.patch_values * self.cfg.temporal_compression_ratio, dtype=torch.float64)
            kept_t = 0.0
        info = {"frames": self.count // 1, "groups": self.groups, "spatial_variance_kept": kept_s,
                "temporal_variance_kept": kept_t}
        return mean.float(), spatial.float(), temporal.float(), info


def fit_patch_autoencoder(
    videos: Iterable[torch.Tensor], cfg: PatchAutoencoderConfig, scale_videos: int = 16
) -> tuple[PatchAutoencoder, dict]:
    """PCA bases from the videos, then one global scale so the latents have unit std."""
    acc = MomentAccumulator(cfg)
    kept: list[torch.Tensor] = []
    for v in videos:
        acc.add(v)
        if len(kept) < scale_videos:
            kept.append(v)
    mean, spatial, temporal, info = acc.solve()
    ae = PatchAutoencoder(cfg)
    ae.set_bases(mean, spatial, temporal, 1.0)
    with torch.no_grad():
        z = torch.cat([ae.encode(v[None]).flatten() for v in kept])
    scale = float(1.0 / z.std().clamp_min(1e-6))
    ae.set_bases(mean, spatial, temporal, scale)
    info["scaling_factor"] = scale
    return ae.eval(), info


@torch.no_grad()
def round_trip_psnr(ae: PatchAutoencoder, video: torch.Tensor) -> float:
    f = video.shape[1]
    rec = ae.decode(ae.encode(video[None]))[0, :, :f]
    assert rec.shape[1] == f or latent_frames(f) > 0
    return psnr(rec, video)


def still_clip(image: np.ndarray, frames: int) -> torch.Tensor:
    """A photograph as a static clip (the portrait case), [3, F, H, W] in [-1, 1]."""
    return frames_to_tensor(np.repeat(image[None], frames, axis=0))


# Photographs without people (scikit-image's offline data; licences in docs/world.md): the code must keep
# photographic texture, and no face it will be scored on may be in its fit.
STILL_PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                "colorwheel", "brick", "grass", "gravel", "coins", "moon")


def photo_stills(names: Iterable[str], size: int, per_photo: int, frames: int, seed: int) -> Iterator[torch.Tensor]:
    """Random square crops (30-100 % of the short side, random flips) of scikit-image photographs as
    still clips, [3, F, size, size] in [-1, 1]."""
    import skimage.data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    for name in names:
        img = getattr(skimage.data, name)()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        for _ in range(per_photo):
            s = int(min(h, w) * rng.uniform(0.3, 1.0))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = img[y : y + s, x : x + s][:, :: 1 if rng.random() < 0.5 else -1]
            crop = (resize(crop, (size, size), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
            yield still_clip(crop, frames)


def square_image(path: str | Path, size: int) -> np.ndarray:
    """An image file centre-cropped to a square and resized: uint8 [size, size, 3]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        return np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.LANCZOS))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fit_autoencoder", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="world/photo clip folders (train split is fitted)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--heldout", nargs="*", default=[], help="clip folders scored (held-out split), never fitted")
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--spatial", type=int, default=64, help="spatial PCA channels")
    p.add_argument("--temporal", type=int, default=16, help="within-group detail PCA channels")
    p.add_argument("--limit", type=int, default=None, help="fit on at most this many clips")
    p.add_argument("--photo-stills", type=int, default=0, metavar="N",
                   help="also fit on N random crops of each photograph in STILL_PHOTOS (no people), as still clips")
    p.add_argument("--size", type=int, default=128, help="frame size of the photo stills")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-images", nargs="*", default=[], metavar="IMAGE",
                   help="photographs (never fitted) scored as still 33-frame clips, centre-cropped square")
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix != ".safetensors":
        p.error("--out must name a .safetensors file")
    for root in [*a.data, *a.heldout]:
        if not Path(root).is_dir():
            p.error(f"no clip folder at {root}")
    cfg = PatchAutoencoderConfig(patch=a.patch, spatial_channels=a.spatial, temporal_channels=a.temporal)
    train = (v for i, (_, v) in enumerate(clip_videos(a.data, "train")) if a.limit is None or i < a.limit)
    stills = photo_stills(STILL_PHOTOS, a.size, a.photo_stills, 9, a.seed) if a.photo_stills else iter(())
    ae, info = fit_patch_autoencoder(itertools.chain(train, stills), cfg)
    scores = {name: round_trip_psnr(ae, v) for name, v in clip_videos(a.heldout, "heldout")}
    photo_scores = {Path(f).name: round_trip_psnr(ae, still_clip(square_image(f, a.size), 33)) for f in a.score_images}
    report = {"config": cfg.to_dict() | {"scaling_factor": ae.cfg.scaling_factor}, "fit": info,
              "heldout_psnr": scores,
              "heldout_psnr_mean": float(np.mean(list(scores.values()))) if scores else None,
              "photo_psnr": photo_scores}
    save_autoencoder(out, ae)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "heldout_psnr"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

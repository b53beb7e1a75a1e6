"""Evaluation metrics shared by the trainer, the demo model card and later issues.

* lip sync: Pearson r between the generated mouth opening (measured from pixels) and the
  audio-derived target, per clip, and the lag that maximises it -- our analogue of Sync-C / Sync-D.
  Lag convention: a positive lag means the generated mouth moves `lag` frames AFTER the target.
* identity: PSNR / SSIM outside the mouth box, generated frames vs the portrait (or any reference).
* text control: head motion measured from pixels (vertical / horizontal shift of the face region
  that best re-aligns each frame to frame 0) -- separates "nodding" from "still".
* seams: mean frame-to-frame change at sliding-window seams relative to the other latent-frame starts
  (1 = invisible), and what that ratio gives by chance.
* drift: identity PSNR of the first span minus the last span of a long video, and (`drift_trend`) the
  line through its per-second PSNRs, which one noisy second cannot swing.
* upper face (issue 26): the face from the forehead to the nose tip, which a talking head with a still
  head does not move. Flicker = mean absolute frame-to-frame change of its grey level (0-255; mean and
  95th percentile over every pixel and frame pair), identity = PSNR of it vs the portrait. A still
  photograph scores 0 and PSNR_CAP. `upper_face_mask` builds the region from face-mesh landmarks.

Mouth opening comes from the world's own measuring function (training.data.mouth) on the rendered
face geometry, and from mediapipe face mesh where a face is detectable (real footage).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from training.data.mouth import LUMA, measure_mouth_opening


# ----------------------------------------------------------------------------------------- lip sync
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 when either side is constant (a frozen mouth carries no sync)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-8 or b.std() < 1e-8:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def lagged_r(pred: np.ndarray, target: np.ndarray, lag: int) -> float:
    """r between pred[t + lag] and target[t] (lag > 0: the generated mouth is late)."""
    if lag >= 0:
        return pearson(pred[lag:], target[: len(target) - lag])
    return pearson(pred[: len(pred) + lag], target[-lag:])


def lipsync(pred: np.ndarray, target: np.ndarray, max_lag: int = 3) -> dict[str, float]:
    """{'r': r at lag 0, 'r_lag1': max over |lag| <= 1 (issue 5's target: r >= 0.5 at a lag within
    +-1 frame), 'best_r': max over |lag| <= max_lag, 'best_lag': that lag}."""
    rs = {lag: lagged_r(pred, target, lag) for lag in range(-max_lag, max_lag + 1)}
    best = max(rs, key=lambda k: rs[k])
    near = max(rs[lag] for lag in range(-min(1, max_lag), min(1, max_lag) + 1))
    return {"r": rs[0], "r_lag1": near, "best_r": rs[best], "best_lag": float(best)}


def mouth_openings(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per-frame mouth opening read from pixels inside each frame's mouth box (world geometry)."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if len(boxes) == 1:
        boxes = np.repeat(boxes, len(frames), 0)
    return np.array([measure_mouth_opening(f, b) for f, b in zip(frames, boxes, strict=True)], np.float32)


# mediapipe face mesh: inner-lip landmarks 13 (upper) / 14 (lower), face height 10 (forehead) / 152 (chin)
_MP_UPPER, _MP_LOWER, _MP_TOP, _MP_CHIN = 13, 14, 10, 152


def mediapipe_mouth_openings(frames: np.ndarray, upscale: int = 256) -> np.ndarray:
    """Mouth opening per frame from mediapipe face mesh (inner-lip gap / face height); NaN if no face.

    Small frames are upscaled first: face mesh does not find faces of a few dozen pixels.
    """
    from magicinfinite_core.inputs.face_tasks import FaceMesh

    out = np.full(len(frames), np.nan, np.float32)
    with FaceMesh(max_faces=1) as mesh:
        for i, f in enumerate(frames):
            img = f
            if max(f.shape[:2]) < upscale:
                t = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float()
                s = upscale / max(f.shape[:2])
                t = F.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)
                img = t[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
            faces = mesh.landmarks(np.ascontiguousarray(img))
            if not faces:
                continue
            lm = faces[0]  # [468, 2] normalised x, y
            gap = abs(lm[_MP_LOWER, 1] - lm[_MP_UPPER, 1])
            height = abs(lm[_MP_CHIN, 1] - lm[_MP_TOP, 1])
            out[i] = gap / max(height, 1e-6)
    return out


# ----------------------------------------------------------------------------------------- identity
def _to_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) / (255.0 if np.asarray(x).dtype == np.uint8 else 1.0)


def masked_psnr(frames: np.ndarray, reference: np.ndarray, keep: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 1) of frames [F, H, W, 3] vs reference [H, W, 3] or [F, H, W, 3] where keep [H, W] or [F, H, W]."""
    a, b = _to_float(frames), _to_float(reference)
    b = np.broadcast_to(b, a.shape)
    err = (a - b) ** 2
    if keep is not None:
        k = np.broadcast_to(np.asarray(keep, bool)[..., None] if np.asarray(keep).ndim in (2, 3) else keep, a.shape)
        mse = float(err[k].mean()) if k.any() else 0.0
    else:
        mse = float(err.mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def ssim(frames: np.ndarray, reference: np.ndarray, keep: np.ndarray | None = None, chunk: int = 32) -> float:
    """Mean SSIM (Gaussian window sigma 1.5, on luma) of frames vs reference over `keep` pixels.

    Computed `chunk` frames at a time: a 60 s video at 512 x 512 in one go needs ~30 GB."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and len(frames) > chunk:
        ref = np.asarray(reference)
        kp = None if keep is None else np.asarray(keep, bool)
        total = count = 0.0
        for a in range(0, len(frames), chunk):
            b = min(a + chunk, len(frames))
            r = ref[a:b] if ref.ndim == 4 else ref
            k = kp[a:b] if kp is not None and kp.ndim == 3 else kp
            if k is None:
                n = (b - a) * frames.shape[1] * frames.shape[2]
            else:
                n = int(k.sum()) * ((b - a) if k.ndim == 2 else 1)
            if n:
                total += _ssim_block(frames[a:b], r, k) * n
                count += n
        return total / count if count else 1.0
    return _ssim_block(frames, reference, keep)


def _ssim_block(frames: np.ndarray, reference: np.ndarray, keep: np.ndarray | None = None) -> float:
    a = torch.from_numpy(_to_float(frames) @ LUMA)[:, None]
    b = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(_to_float(reference), _to_float(frames).shape)))
    b = (b @ torch.from_numpy(LUMA))[:, None]
    x = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), win)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    s = s[:, 0].numpy()
    if keep is not None:
        k = np.broadcast_to(np.asarray(keep, bool), s.shape)
        return float(s[k].mean()) if k.any() else 1.0
    return float(s.mean())


def non_mouth_mask(mouth_boxes: np.ndarray, height: int, width: int, margin: float = 0.5) -> np.ndarray:
    """[H, W] True outside the union of the (enlarged) mouth boxes: where identity is judged."""
    from training.data.tensors import box_mask

    return ~box_mask(np.asarray(mouth_boxes).reshape(-1, 4), height, width, margin).any(0)


# --------------------------------------------------------------------------------------- head motion
def head_shifts(frames: np.ndarray, face_box: np.ndarray, max_shift: int = 5, exclude: np.ndarray | None = None) -> np.ndarray:
    """[F, 2] (dx, dy) sub-pixel shift that best maps the face region of frame 0 onto each frame.

    Brute-force search over integer shifts within +-max_shift on luma (mouth excluded if given),
    refined by a parabola through the best cost and its neighbours.
    """
    lum = _to_float(frames) @ LUMA
    f, h, w = lum.shape
    x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(face_box, np.float32).reshape(-1, 4)[0])
    x0, y0 = max(x0, max_shift), max(y0, max_shift)
    x1, y1 = min(x1, w - max_shift), min(y1, h - max_shift)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.zeros((f, 2), np.float32)
    ref = lum[0, y0:y1, x0:x1]
    wgt = np.ones_like(ref) if exclude is None else (~np.asarray(exclude, bool)[y0:y1, x0:x1]).astype(np.float32)
    out = np.zeros((f, 2), np.float32)
    shifts = range(-max_shift, max_shift + 1)
    for i in range(f):
        cost = np.empty((len(shifts), len(shifts)), np.float64)
        for a, dy in enumerate(shifts):
            for b, dx in enumerate(shifts):
                crop = lum[i, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
                cost[a, b] = float((wgt * (crop - ref) ** 2).sum() / max(wgt.sum(), 1.0))
        a, b = np.unravel_index(int(cost.argmin()), cost.shape)

        def refine(c: np.ndarray, k: int) -> float:
            if 0 < k < len(c) - 1:
                den = c[k - 1] - 2 * c[k] + c[k + 1]
                if den > 1e-12:
                    return float(k + 0.5 * (c[k - 1] - c[k + 1]) / den)
            return float(k)

        out[i] = (refine(cost[a], b) - max_shift, refine(cost[:, b], a) - max_shift)
    return out


def head_motion(frames: np.ndarray, face_box: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, float]:
    """Std over time of the face's vertical / horizontal shift in pixels (nodding moves dy)."""
    s = head_shifts(frames, face_box, exclude=exclude)
    return {"motion_y": float(s[:, 1].std()), "motion_x": float(s[:, 0].std())}


def separability(a: list[float], b: list[float]) -> dict[str, float]:
    """How well values of group b exceed group a: AUC (P(b > a)) and Cohen's d."""
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a_) == 0 or len(b_) == 0:
        return {"auc": float("nan"), "cohen_d": float("nan")}
    auc = float((b_[:, None] > a_[None, :]).mean() + 0.5 * (b_[:, None] == a_[None, :]).mean())
    if len(a_) < 2 or len(b_) < 2:
        return {"auc": auc, "cohen_d": float("nan")}  # no spread to compare against
    pooled = math.sqrt(0.5 * (a_.var(ddof=1) + b_.var(ddof=1)) + 1e-12)
    return {"auc": auc, "cohen_d": float((b_.mean() - a_.mean()) / pooled)}


# -------------------------------------------------------------------------------------- seams, drift
def frame_changes(frames: np.ndarray, mask: np.ndarray | None = None, chunk: int = 64) -> np.ndarray:
    """[F-1]: mean |frame[t] - frame[t-1]| (0-1 scale) into each frame t >= 1, over `mask` [H, W] pixels when
    given; `chunk` frames at a time (a 60 s 512 px video as float32 would take 5 GB at once)."""
    keep = None if mask is None else np.asarray(mask, bool)
    out = []
    for a in range(0, max(len(frames) - 1, 0), chunk):
        x = np.asarray(frames[a : a + chunk + 1])
        x = _to_float(x if keep is None else x[:, keep])
        out.append(np.abs(np.diff(x, axis=0)).reshape(len(x) - 1, -1).mean(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def _changes(frames_or_changes: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The seam measures take frames [F, H, W, 3] or their `frame_changes` [F-1] (computed once, reused)."""
    x = np.asarray(frames_or_changes)
    return x if x.ndim == 1 else frame_changes(x, mask)


def _seam_sets(n_changes: int, seams: list[int], period: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into frame_changes of the seam frames, and of the other frames at the same place of the
    latent grid (t % period equal to a seam's), both sorted."""
    idx = sorted({t - 1 for t in seams if 1 <= t <= n_changes})
    phases, taken = {(i + 1) % period for i in idx}, set(idx)
    other = [i for i in range(n_changes) if (i + 1) % period in phases and i not in taken]
    return np.asarray(idx, int), np.asarray(other, int)


def seam_score(frames: np.ndarray, seams: list[int], mask: np.ndarray | None = None, period: int = 4) -> float:
    """Mean frame change into the seam frames t divided by the mean change into the other frames that sit at
    the same place of the latent grid (t % `period` equal; `period` 4 = the causal VAE's video frames per
    latent frame, 1 = every other frame). 1 = seams cannot be told from any other latent-frame start.

    Why like with like: a motion decoder changes a frame differently where a latent frame starts than
    inside one, and sliding-window seams always fall on latent-frame starts. Up to session 11 this was
    the mean at seams over the MEDIAN elsewhere (`seam_score_vs_median`); frame changes are heavy-tailed
    (a nod, a stressed syllable), so that ratio was well above 1 for any random set of frames.
    `frames` may also be their `frame_changes` (then `mask` is not used)."""
    d = _changes(frames, mask)
    idx, other = _seam_sets(len(d), seams, period)
    if not len(idx):
        return 1.0
    base = float(d[other].mean()) if len(other) else float(d.mean())
    return float(d[idx].mean() / max(base, 1e-8))


def seam_score_vs_median(frames: np.ndarray, seams: list[int], mask: np.ndarray | None = None) -> float:
    """The estimator used up to session 11, kept to compare with earlier model cards: mean |change| at
    seam frames over the median of all other frames' changes (biased high, see `seam_score`)."""
    d = _changes(frames, mask)
    idx, _ = _seam_sets(len(d), seams, 1)
    if not len(idx):
        return 1.0
    rest = np.delete(d, idx)
    base = float(np.median(rest)) if len(rest) else float(d.mean())
    return float(d[idx].mean() / max(base, 1e-8))


def seam_chance(frames: np.ndarray, seams: list[int], mask: np.ndarray | None = None, period: int = 4,
                draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """What `seam_score` gives by chance: the same score for `draws` random sets of as many latent-frame
    starts (seeded), their mean and 95th percentile, and the share of them scoring at least the real
    seams (a p-value: small = the seams stand out)."""
    d = _changes(frames, mask)
    idx, other = _seam_sets(len(d), seams, period)
    pool = np.concatenate([idx, other])
    if not len(idx) or len(other) < len(idx):
        return {"mean": float("nan"), "p95": float("nan"), "p_value": float("nan")}
    observed = seam_score(d, seams, period=period)
    rng = np.random.default_rng(seed)
    scores = np.empty(draws)
    for k in range(draws):
        pick = rng.permutation(len(pool))
        a, b = pool[pick[: len(idx)]], pool[pick[len(idx):]]
        scores[k] = d[a].mean() / max(float(d[b].mean()), 1e-8)
    return {"mean": float(scores.mean()), "p95": float(np.percentile(scores, 95)),
            "p_value": float((scores >= observed - 1e-12).mean())}


def drift(frames: np.ndarray, reference: np.ndarray, keep: np.ndarray | None = None, fps: int = 25, span_s: float = 10.0) -> dict[str, float]:
    """Identity PSNR vs the reference over the first and the last `span_s` seconds, and their gap."""
    n = int(span_s * fps)
    first = masked_psnr(frames[:n], reference, keep)
    last = masked_psnr(frames[-n:], reference, keep)
    return {"psnr_first": first, "psnr_last": last, "drift_db": first - last}


def drift_trend(per_second_db: np.ndarray | list[float]) -> dict[str, float]:
    """Least-squares line through a long video's per-second PSNR: the fitted first-minus-last gap (dB; > 0 =
    the end is further from the portrait), its 95 % interval, and the seconds' scatter around the line.

    Why: one second against one second mostly measures what the voice does in those two seconds (a stressed
    word moves the face); the line through all of them measures drift."""
    y = np.asarray(per_second_db, np.float64)
    n = len(y)
    if n < 3:
        return {"fitted_db": float("nan"), "ci95_db": float("nan"), "scatter_db": float("nan")}
    t = np.arange(n, dtype=np.float64)
    slope, icpt = np.polyfit(t, y, 1)
    resid = y - (slope * t + icpt)
    sd = float(np.sqrt((resid ** 2).sum() / (n - 2)))
    se = sd / math.sqrt(((t - t.mean()) ** 2).sum())
    span = n - 1
    return {"fitted_db": float(-slope * span), "ci95_db": float(1.96 * se * span), "scatter_db": sd}


# ---------------------------------------------------------------------------------------- upper face
PSNR_CAP = 100.0  # masked_psnr's value for identical pixels (mse floored at 1e-10)


def grey_levels(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] uint8 (or float in 0-1) -> luma in grey levels 0-255, float32 [..., H, W]."""
    return (_to_float(frames) @ LUMA) * 255.0


def upper_face_mask(oval: np.ndarray, nose_tip_y: float, height: int, width: int) -> np.ndarray:
    """[H, W] True inside the face-oval polygon `oval` [N, 2] (pixel x, y, in order around the face) and
    not below the nose tip's row `nose_tip_y`: forehead, brows, eyes, cheeks and nose, no mouth or jaw."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in np.asarray(oval, np.float64)], fill=1)
    mask = np.asarray(img, bool).copy()
    mask[max(0, int(math.floor(nose_tip_y)) + 1):] = False
    return mask


def upper_face_box_mask(face_box: np.ndarray, mouth_top: float, height: int, width: int) -> np.ndarray:
    """Where no landmarks exist (world clips): the face box's rows above the mouth box's top edge."""
    x0, y0, x1, _ = (float(v) for v in np.asarray(face_box).reshape(4))
    mask = np.zeros((height, width), bool)
    r0, r1 = max(int(round(y0)), 0), min(int(round(mouth_top)), height)
    mask[r0:r1, max(int(round(x0)), 0):min(int(round(x1)), width)] = True
    return mask


def flicker(frames: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Absolute frame-to-frame change in grey levels (0-255) over `mask` [H, W]: 'mean' over every pixel
    and frame pair, 'p95' its 95th percentile. A still video scores 0; NaN with fewer than 2 frames."""
    m = np.asarray(mask, bool)
    if len(frames) < 2 or not m.any():
        return {"mean": float("nan"), "p95": float("nan")}
    g = grey_levels(np.asarray(frames)[:, m])  # [F, P]
    d = np.abs(np.diff(g, axis=0))
    return {"mean": float(d.mean()), "p95": float(np.percentile(d, 95))}


def region_psnr(frames: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, capped at PSNR_CAP) of the frames vs the reference over `mask` [H, W] (all frames pooled)."""
    return min(masked_psnr(frames, reference, mask), PSNR_CAP)

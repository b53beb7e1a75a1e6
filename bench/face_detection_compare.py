"""Face boxes and face-mesh points on our test photographs, as JSON, to compare two mediapipe versions.

    python bench/face_detection_compare.py > before.json        # one environment
    python bench/face_detection_compare.py --against before.json  # another: prints the table

Why: moving from mediapipe 0.10 (``solutions``) to 1.x (Tasks API, vendored model) must not move the
faces the pack finds. Uses only the public functions (``masks.FaceDetector``, ``detect_faces`` and
``photo_face.detect_all_landmarks``), so it runs unchanged on both implementations.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from magicinfinite_core.inputs.masks import FaceDetector  # noqa: E402
from training.data.photo_face import detect_all_landmarks  # noqa: E402


def _paste(canvas_wh: tuple[int, int], items: list[tuple[np.ndarray, int, tuple[int, int]]]) -> np.ndarray:
    """Grey canvas with each (image, new width, top-left) pasted: a full-length / group photo stand-in."""
    canvas = Image.new("RGB", canvas_wh, (128, 128, 128))
    for img, width, xy in items:
        h = round(img.shape[0] * width / img.shape[1])
        canvas.paste(Image.fromarray(img).resize((width, h), Image.LANCZOS), xy)
    return np.asarray(canvas)


def photographs() -> dict[str, np.ndarray]:
    from skimage import data

    load = lambda p: np.asarray(Image.open(ROOT / p).convert("RGB"))  # noqa: E731
    astronaut, luis = data.astronaut(), load("training/data/photo_assets/luispedro.jpg")
    return {
        "portrait_one_speaker.jpg": load("workflows/assets/portrait_one_speaker.jpg"),
        "portrait_two_speakers.jpg": load("workflows/assets/portrait_two_speakers.jpg"),
        "luispedro.jpg": luis,
        "takeo.ppm": load("training/data/photo_assets/takeo.ppm"),
        "astronaut (skimage)": astronaut,
        "chelsea (skimage, a cat)": data.chelsea(),
        # astronaut's face ~95 px of 512: scaled to 256 px wide in a 1024x1536 frame the face is ~5% of the width
        "full-length stand-in 1024x1536": _paste((1024, 1536), [(astronaut, 256, (384, 40))]),
        # two people, faces ~10% of a 2000x1428 frame (the case the short-range detector misses)
        "group stand-in 2000x1428": _paste((2000, 1428), [(astronaut, 1100, (80, 300)),
                                                         (luis, 700, (1200, 400))]),
    }


def measure() -> dict[str, dict]:
    out = {}
    with FaceDetector() as det:
        for name, img in photographs().items():
            t = time.perf_counter()
            boxes = det.detect(img, min_faces=2 if ("two" in name or "group" in name) else 1)
            seconds = time.perf_counter() - t
            meshes = detect_all_landmarks(img)
            out[name] = {
                "size": [int(img.shape[1]), int(img.shape[0])],
                "boxes": [[round(b.x0, 1), round(b.y0, 1), round(b.x1, 1), round(b.y1, 1), round(b.score, 3)]
                          for b in boxes],
                "detect_s": round(seconds, 3),
                "mesh_faces": len(meshes),
                # lip centre (13/14) and chin (152) of each mesh, pixels
                "mesh_points": [[[round(float(v), 1) for v in m[i]] for i in (13, 14, 152)] for m in meshes],
            }
    return out


def table(before: dict, after: dict) -> str:
    rows = ["| photograph | size | faces before / after | largest box corner difference (px) | mesh faces before / after "
            "| lip/chin points moved (px) |", "|---|---|---|---|---|---|"]
    for name, b in before.items():
        a = after[name]
        diff = "-"
        if b["boxes"] and len(a["boxes"]) >= len(b["boxes"]):
            diffs = [max(min(abs(np.array(x[:4]) - np.array(y[:4])).max() for y in a["boxes"]) for x in b["boxes"])]
            diff = f"{max(diffs):.1f}"
        moved = "-"
        if b["mesh_points"] and a["mesh_points"]:
            moved = f"{max(min(abs(np.array(p) - np.array(q)).max() for q in a['mesh_points']) for p in b['mesh_points']):.1f}"
        rows.append(f"| {name} | {b['size'][0]}x{b['size'][1]} | {len(b['boxes'])} / {len(a['boxes'])} | {diff} "
                    f"| {b['mesh_faces']} / {a['mesh_faces']} | {moved} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", help="JSON from the other environment: print the comparison table")
    args = p.parse_args()
    result = measure()
    if args.against:
        print(table(json.loads(Path(args.against).read_text()), result))
        print(json.dumps(result, indent=1))
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

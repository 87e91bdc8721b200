"""The README's refinement figure: one held-out camera of a refined run, as reference | seed | refined.

    stitch generate PHOTO --mode stage --steps 0 --max-side 384 --run-dir out/kyoto -o out/kyoto/scene.ply
    stitch refine out/kyoto --steps 600
    python benchmarks/refine_sheet.py out/kyoto docs/kyoto_refine_held_out.png

The held-out camera is the first jittered camera of the photo view (`stitch refine`'s quality report, never
trained on); its reference is the photo reprojected with its completed depth, black where it has no pixels.
Each panel is labelled with its PSNR over the reference's pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.tools.refine_inputs import load_run, references
from splat.formats.io import load_scene
from splat.losses import psnr
from splat.render import render_camera


def render(scene: Path, camera) -> np.ndarray:
    gaussians = load_scene(scene)
    with torch.no_grad():
        return render_camera(gaussians, camera).rgb[0].clamp(0, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--reference", default="view 0 jitter 0")
    args = parser.parse_args()

    _, held = references(load_run(args.run))
    ref = next(r for r in held if r.name == args.reference)
    mask = torch.from_numpy(ref.mask)
    target = np.where(ref.mask[..., None], ref.image, 0.0)
    panels = [("reference (never trained on)", target)]
    for label, name in (("seed Gaussians", "scene.ply"), ("refined", "refined.ply")):
        image = render(args.run / name, ref.camera)
        value = psnr(torch.from_numpy(image), torch.from_numpy(ref.image), mask)
        panels.append((f"{label}: {value:.1f} dB", image))
    tiles = []
    for label, image in panels:
        tile = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
        ImageDraw.Draw(tile).text((6, 4), label, fill=(255, 255, 0))
        tiles.append(np.asarray(tile))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(args.output)
    print(f"{args.output}: " + " | ".join(label for label, _ in panels))


if __name__ == "__main__":
    main()

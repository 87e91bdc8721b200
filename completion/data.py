"""Training samples: image + teacher depth + mask, half masked completion and half monocular.

Per sample (PAPER-NOTES, training recipe):
- masked completion (probability 1 - mono_prob): a mask (warped disocclusion, `stitch train masks`) hides
  part of the teacher depth; the rest is the sparse input. The target is the teacher depth scaled by a random
  factor (its median drawn log-uniformly in `rescale_median`, capped so it stays inside [min, max] depth): the
  network must read the scale from the known pixels, not from the image.
- monocular: zero sparse input; the target is the teacher depth at its own scale (relative teachers at
  `relative_median` metres).
Augmentations: random scaled crop at the training aspect ratio, horizontal flip, colour jitter.
Every random number comes from (seed, epoch, index), so a run is reproducible and `--resume` replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from completion.depth_io import IMAGE_EXTS, finished_stems, read_depth, read_mask, read_rgb
from engine.errors import StitchError


@dataclass(frozen=True)
class DataConfig:
    images: str = ""  # folder of RGB images
    depths: str = ""  # teacher depth folder (stitch train teacher)
    masks: str = ""  # mask folder (stitch train masks)
    size: tuple[int, int] = (384, 512)  # (H, W) of training crops
    mono_prob: float = 0.5  # fraction of monocular samples (zero sparse input)
    mask_pairing: str = "random"  # "random": any mask (the paper: Places masks on NYU images) | "own"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    rescale: bool = True  # randomly rescale the target of masked samples
    rescale_median: tuple[float, float] = (0.5, 6.0)  # metres, log-uniform
    relative_median: float = 2.5  # relative teachers: median depth in metres for monocular samples
    crop_scale: tuple[float, float] = (0.6, 1.0)  # crop side as a fraction of the largest crop that fits
    hflip: bool = True
    color_jitter: float = 0.1
    seed: int = 0


def _image_index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise StitchError(f"image folder {folder} does not exist")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


class CompletionDataset(Dataset):
    """Items are dicts of tensors: rgb [3,H,W] in [0,1], sparse [1,H,W] m, known [1,H,W] {0,1},
    target [1,H,W] m, valid [1,H,W] {0,1}, mono [] {0,1}, index []."""

    def __init__(self, cfg: DataConfig, stems: list[str] | None = None) -> None:
        self.cfg = cfg
        images = _image_index(Path(cfg.images))
        depth_stems = finished_stems(Path(cfg.depths))
        self.mask_stems = finished_stems(Path(cfg.masks)) if cfg.masks else []
        if cfg.mono_prob < 1.0 and not self.mask_stems:
            raise StitchError(f"no masks in {cfg.masks!r}; run `stitch train masks` or set mono_prob = 1")
        if cfg.mask_pairing not in ("random", "own"):
            raise StitchError(f"mask_pairing must be random or own, got {cfg.mask_pairing!r}")
        pool = [s for s in depth_stems if s in images]
        if stems is not None:
            pool = [s for s in pool if s in set(stems)]
        if not pool:
            raise StitchError(
                f"no image in {cfg.images} has teacher depth in {cfg.depths}; run the teacher first"
            )
        self.stems = pool
        self.images = images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.stems)

    def _crop_box(self, rng: np.random.Generator, H: int, W: int) -> tuple[int, int, int, int]:
        th, tw = self.cfg.size
        aspect = tw / th
        ch_max = min(H, W / aspect)
        s = rng.uniform(*self.cfg.crop_scale)
        ch = max(2, round(ch_max * s))
        cw = max(2, min(W, round(ch * aspect)))
        y0 = int(rng.integers(0, H - ch + 1))
        x0 = int(rng.integers(0, W - cw + 1))
        return y0, x0, ch, cw

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.epoch, int(idx)])
        stem = self.stems[idx]
        rgb = read_rgb(self.images[stem])  # [H, W, 3]
        depth, meta = read_depth(Path(cfg.depths), stem)  # [h, w]
        H, W = rgb.shape[:2]
        if depth.shape != (H, W):
            depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST)
        valid0 = depth > 0
        if meta.get("kind") == "relative" and valid0.any():
            depth = depth * (cfg.relative_median / float(np.median(depth[valid0])))

        mono = bool(rng.random() < cfg.mono_prob)
        hole = None
        if not mono:
            mstem = stem if cfg.mask_pairing == "own" and stem in self.mask_stems else None
            if mstem is None:
                mstem = self.mask_stems[int(rng.integers(len(self.mask_stems)))]
            hole = read_mask(Path(cfg.masks), mstem)
            if hole.shape != (H, W):
                hole = cv2.resize(hole.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0

        # scaled crop at the training aspect ratio, then resize to the training size
        th, tw = cfg.size
        y0, x0, ch, cw = self._crop_box(rng, H, W)
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        rgb = cv2.resize(rgb[sl], (tw, th), interpolation=cv2.INTER_AREA if ch > th else cv2.INTER_LINEAR)
        depth = cv2.resize(depth[sl], (tw, th), interpolation=cv2.INTER_NEAREST)
        if hole is not None:
            hole = cv2.resize(hole[sl].astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST) > 0
        if cfg.hflip and rng.random() < 0.5:
            rgb, depth = rgb[:, ::-1], depth[:, ::-1]
            hole = hole[:, ::-1] if hole is not None else None
        if cfg.color_jitter > 0:
            j = cfg.color_jitter
            b, c, s = (float(rng.uniform(1 - j, 1 + j)) for _ in range(3))
            grey = rgb.mean(axis=2, keepdims=True)
            rgb = grey + (rgb - grey) * s
            rgb = (rgb - rgb.mean()) * c + rgb.mean()
            rgb = np.clip(rgb * b, 0.0, 1.0)

        valid = depth > 0
        target = depth.astype(np.float32)
        if not mono and cfg.rescale and valid.any():
            med = float(np.median(target[valid]))
            lo, hi = np.log(cfg.rescale_median[0]), np.log(cfg.rescale_median[1])
            scale = float(np.exp(rng.uniform(lo, hi))) / med
            dmax = float(target[valid].max())
            scale = min(scale, 0.99 * cfg.max_depth / dmax)  # keep the scene inside the output range
            target = target * scale
        valid = valid & (target >= cfg.min_depth) & (target <= cfg.max_depth)
        known = np.zeros_like(valid) if mono else (~hole & valid)
        sparse = np.where(known, target, 0.0).astype(np.float32)

        def t(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]

        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)),
            "sparse": t(sparse),
            "known": t(known),
            "target": t(np.where(valid, target, 0.0)),
            "valid": t(valid),
            "mono": torch.tensor(float(mono)),
            "index": torch.tensor(int(idx)),
        }

"""Training samples: image + teacher depth + mask, half masked completion and half monocular.

Per sample (PAPER-NOTES, training recipe):
- masked completion (probability 1 - mono_prob): a mask (warped disocclusion, `stitch train masks`) hides
  part of the teacher depth; the rest is the sparse input. The target is the teacher depth scaled by a random
  factor (its median drawn log-uniformly in `rescale_median`, capped so it stays inside [min, max] depth): the
  network must read the scale from the known pixels, not from the image.
- monocular: zero sparse input; the target is the teacher depth at its own scale (relative teachers at
  `relative_median` metres).
Augmentations: random scaled crop at the training aspect ratio, horizontal flip, colour jitter.
`augment="release"` / `rescale_mode="uniform"` (set by `recipe: release`) reproduce the release's trainer
instead: no crop (whole frame resized), flip, gamma / brightness / per-channel colour +-10 % with p 0.5, and
the target of masked samples scaled by s ~ U[min_depth / dmin, max_depth / dmax].
Every random number comes from (seed, epoch, index), so a run is reproducible and `--resume` replays exactly.

Sources: `images` / `depths` / `masks` name one folder source; `sources` a weighted mixture, each
`{"root", "layout", "split_file", "split", "border", "depths", "masks", "weight"}` (training/sources.py
layouts). Each epoch has as many samples as the weighted sources have items together; slot j of epoch e
draws its source with probability weight / sum(weights) (seeded by (seed, e)) and walks that source's own
permutation. A source with weight 0 only lends its masks: with `mask_pairing="random"` masks are drawn from
every source's mask folder (the paper: Places365 masks on NYU images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from completion.training.depth_io import finished_stems, read_depth, read_mask
from completion.training.sources import Item, SourceSpec, list_items
from splat.errors import StitchError


@dataclass(frozen=True)
class DataConfig:
    images: str = ""  # folder (tree) of RGB images: a single source (or use `sources`)
    depths: str = ""  # teacher depth folder (stitch train teacher)
    masks: str = ""  # mask folder (stitch train masks)
    sources: tuple = ()  # weighted mixture: dicts (see the module doc); replaces images/depths/masks
    size: tuple[int, int] = (384, 512)  # (H, W) of training crops
    mono_prob: float = 0.5  # fraction of monocular samples (zero sparse input)
    mask_pairing: str = "random"  # "random": any mask (the paper: Places masks on NYU images) | "own"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    rescale: bool = True  # randomly rescale the target of masked samples
    rescale_mode: str = "log-median"  # log-median (ours) | uniform (release: s ~ U[min/dmin, max/dmax])
    rescale_median: tuple[float, float] = (0.5, 6.0)  # metres, log-uniform
    relative_median: float = 2.5  # relative teachers: median depth in metres for monocular samples
    augment: str = "crop"  # crop (scaled crops + flip + jitter) | release (no crop, flip, gamma/colour p 0.5)
    crop_scale: tuple[float, float] = (0.6, 1.0)  # crop side as a fraction of the largest crop that fits
    hflip: bool = True
    color_jitter: float = 0.1
    seed: int = 0


_SOURCE_KEYS = {"root", "layout", "split_file", "split", "border", "depths", "masks", "weight", "images"}


@dataclass(frozen=True)
class _Source:
    spec: SourceSpec
    depths: str
    masks: str
    weight: float
    items: tuple[Item, ...]


def _sources(cfg: DataConfig) -> list[_Source]:
    raw = list(cfg.sources)
    if raw and cfg.images:
        raise StitchError("give either data.images/depths/masks or data.sources, not both")
    if not raw:
        raw = [{"root": cfg.images, "depths": cfg.depths, "masks": cfg.masks, "weight": 1.0}]
    out = []
    for k, d in enumerate(raw):
        if not isinstance(d, dict):
            raise StitchError(f"data.sources[{k}] must be an object with root, depths, masks, weight")
        bad = sorted(set(d) - _SOURCE_KEYS)
        if bad:
            raise StitchError(f"data.sources[{k}] has unknown keys {bad}; known: {sorted(_SOURCE_KEYS)}")
        root = d.get("root") or d.get("images") or ""
        if not root or not d.get("depths"):
            raise StitchError(f"data.sources[{k}] needs root (images) and depths (teacher output)")
        weight = float(d.get("weight", 1.0))
        if weight < 0:
            raise StitchError(f"data.sources[{k}].weight must be >= 0, got {weight}")
        spec = SourceSpec(
            str(root),
            d.get("layout", "auto"),
            d.get("split_file", ""),
            d.get("split", "train"),
            d.get("border"),
        )
        items = list_items(spec)
        have = set(finished_stems(Path(d["depths"])))
        items = [it for it in items if it.id in have]
        if weight > 0 and not items:
            raise StitchError(
                f"no image of {root} has teacher depth in {d['depths']}; run `stitch train teacher` first"
            )
        out.append(_Source(spec, str(d["depths"]), str(d.get("masks") or ""), weight, tuple(items)))
    if not any(s.weight > 0 for s in out):
        raise StitchError("every data source has weight 0; give at least one a positive weight")
    return out


class CompletionDataset(Dataset):
    """Items are dicts of tensors: rgb [3,H,W] in [0,1], sparse [1,H,W] m, known [1,H,W] {0,1},
    target [1,H,W] m, valid [1,H,W] {0,1}, mono [] {0,1}, index []."""

    def __init__(self, cfg: DataConfig, stems: list[str] | None = None) -> None:
        self.cfg = cfg
        if cfg.mask_pairing not in ("random", "own"):
            raise StitchError(f"mask_pairing must be random or own, got {cfg.mask_pairing!r}")
        if cfg.augment not in ("crop", "release"):
            raise StitchError(f"augment must be crop or release, got {cfg.augment!r}")
        if cfg.rescale_mode not in ("log-median", "uniform"):
            raise StitchError(f"rescale_mode must be log-median or uniform, got {cfg.rescale_mode!r}")
        self.sources = _sources(cfg)
        # the mask pool: (mask folder, id) over every source that has masks
        self.mask_pool: list[tuple[str, str]] = []
        self.own_masks: list[set[str]] = []
        for src in self.sources:
            ids = finished_stems(Path(src.masks)) if src.masks else []
            self.mask_pool += [(src.masks, i) for i in ids]
            self.own_masks.append(set(ids))
        if cfg.mono_prob < 1.0 and not self.mask_pool:
            raise StitchError("no masks in the data sources; run `stitch train masks` or set mono_prob = 1")
        keep = None if stems is None else set(stems)
        self.entries: list[list[Item]] = [
            [it for it in src.items if keep is None or it.id in keep] for src in self.sources
        ]
        self.active = [k for k, src in enumerate(self.sources) if src.weight > 0 and self.entries[k]]
        if not self.active:
            raise StitchError("no training image has teacher depth; run the teacher first")
        self.n = sum(len(self.entries[k]) for k in self.active)
        self.stems = [it.id for k in self.active for it in self.entries[k]]
        self.epoch = 0
        self._table: list[tuple[int, int]] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if len(self.active) == 1:
            k = self.active[0]
            self._table = [(k, i) for i in range(len(self.entries[k]))]
            return
        rng = np.random.default_rng([self.cfg.seed, self.epoch, 7919])
        w = np.array([self.sources[k].weight for k in self.active], np.float64)
        pick = rng.choice(len(self.active), size=self.n, p=w / w.sum())
        perms = {k: rng.permutation(len(self.entries[k])) for k in self.active}
        seen = dict.fromkeys(self.active, 0)
        table = []
        for j in pick:
            k = self.active[int(j)]
            table.append((k, int(perms[k][seen[k] % len(perms[k])])))
            seen[k] += 1
        self._table = table

    def __len__(self) -> int:
        return self.n

    def source_of(self, idx: int) -> int:
        return self._table[idx][0]

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
        k, i = self._table[idx]
        src, item = self.sources[k], self.entries[k][i]
        rgb = item.load_rgb()  # [H, W, 3]
        depth, meta = read_depth(Path(src.depths), item.id)  # [h, w]
        H, W = rgb.shape[:2]
        if depth.shape != (H, W):
            depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST)
        valid0 = depth > 0
        if meta.get("kind") == "relative" and valid0.any():
            depth = depth * (cfg.relative_median / float(np.median(depth[valid0])))

        mono = bool(rng.random() < cfg.mono_prob)
        hole = None
        if not mono:
            if cfg.mask_pairing == "own" and item.id in self.own_masks[k]:
                mdir, mstem = src.masks, item.id
            else:
                mdir, mstem = self.mask_pool[int(rng.integers(len(self.mask_pool)))]
            hole = read_mask(Path(mdir), mstem)
            if hole.shape != (H, W):
                hole = cv2.resize(hole.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0

        th, tw = cfg.size
        if cfg.augment == "crop":  # scaled crop at the training aspect ratio, then resize
            y0, x0, ch, cw = self._crop_box(rng, H, W)
        else:  # the release: the whole frame, resized
            y0, x0, ch, cw = 0, 0, H, W
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        rgb = cv2.resize(rgb[sl], (tw, th), interpolation=cv2.INTER_AREA if ch > th else cv2.INTER_LINEAR)
        depth = cv2.resize(depth[sl], (tw, th), interpolation=cv2.INTER_NEAREST)
        if hole is not None:
            hole = cv2.resize(hole[sl].astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST) > 0
        if cfg.hflip and rng.random() < 0.5:
            rgb, depth = rgb[:, ::-1], depth[:, ::-1]
            hole = hole[:, ::-1] if hole is not None else None
        if cfg.augment == "release":
            if rng.random() < 0.5:  # ZoeDepth's augment_image: gamma, brightness, per-channel colour
                j = cfg.color_jitter
                gamma, bright = float(rng.uniform(1 - j, 1 + j)), float(rng.uniform(1 - j, 1 + j))
                colours = rng.uniform(1 - j, 1 + j, size=3).astype(np.float32)
                rgb = np.clip((rgb**gamma) * bright * colours, 0.0, 1.0)
        elif cfg.color_jitter > 0:
            j = cfg.color_jitter
            b, c, s = (float(rng.uniform(1 - j, 1 + j)) for _ in range(3))
            grey = rgb.mean(axis=2, keepdims=True)
            rgb = grey + (rgb - grey) * s
            rgb = (rgb - rgb.mean()) * c + rgb.mean()
            rgb = np.clip(rgb * b, 0.0, 1.0)

        valid = depth > 0
        target = depth.astype(np.float32)
        if not mono and cfg.rescale and valid.any():
            dmin, dmax = float(target[valid].min()), float(target[valid].max())
            if cfg.rescale_mode == "uniform":  # the release: any scale keeping [dmin, dmax] in range
                lo, hi = cfg.min_depth / max(dmin, 1e-6), cfg.max_depth / max(dmax, 1e-6)
                scale = float(rng.uniform(lo, hi)) if hi > lo else 1.0
            else:
                med = float(np.median(target[valid]))
                lo, hi = np.log(cfg.rescale_median[0]), np.log(cfg.rescale_median[1])
                scale = float(np.exp(rng.uniform(lo, hi))) / med
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

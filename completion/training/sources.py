"""Training image sources in the layouts the paper's datasets are distributed in.

A source lists items `(id, image, optional ground-truth depth)`. Ids are unique across sub-folders (the
relative path with `/` -> `__`, e.g. `kitchen_0028b__rgb_00045`), so two scenes' `rgb_00000.jpg` never
collide. Layouts:

- `folder`: any tree of JPEG/PNG images, recursive (a flat folder keeps the plain file stems as ids).
  `split_file`: optional list of relative paths (one per line, first column) restricting the items.
- `nyu-mat`: NYU Depth v2's official labelled file `nyu_depth_v2_labeled.mat` (MATLAB v7.3 = HDF5, read with
  h5py: `images` [N, 3, W, H] uint8, `depths` [N, W, H] metres). `split_file`: the official `splits.mat`
  (`trainNdxs` / `testNdxs`, 1-based) and `split` = train | test. Ids `nyu_0001` (the 1-based index).
- `nyu-sync`: the BTS/ZoeDepth "sync" training layout `ROOT/<scene>/rgb_00045.jpg` +
  `sync_depth_00045.png` (uint16 millimetres), listed by a BTS split file
  (`nyudepthv2_train_files_with_gt.txt`: `/scene/rgb_x.jpg /scene/sync_depth_x.png focal`).
- `places365`: the `data_256/<letter>/<class>[/<sub>]/00000001.jpg` tree (recursive) or, with `split_file`,
  a Places365 file list (`places365_train_standard.txt`: `/a/airfield/00000001.jpg 0`).

NYU frames (both layouts) have a white / invalid border from the Kinect registration: `border` pixels
(default 8, as the release crops) are cut from every side of image and depth, and the intrinsics shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from completion.training.depth_io import IMAGE_EXTS, read_rgb
from splat.errors import StitchError

LAYOUTS = ("folder", "nyu-mat", "nyu-sync", "places365")
# NYU Depth v2 colour camera (the toolbox's camera_params.m); principal point in full-frame pixels.
NYU_K = np.array([[518.8579, 0.0, 325.5824], [0.0, 519.4696, 253.7362], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SourceSpec:
    root: str  # folder (folder, nyu-sync, places365) or the .mat file (nyu-mat)
    layout: str = "auto"  # auto | folder | nyu-mat | nyu-sync | places365
    split_file: str = ""  # splits.mat / BTS split text / Places file list / relative-path list
    split: str = "train"  # nyu-mat: which half of splits.mat
    border: int | None = None  # pixels cut from each side (None: 8 for NYU, 0 otherwise)

    def resolved_layout(self) -> str:
        if self.layout != "auto":
            if self.layout not in LAYOUTS:
                raise StitchError(
                    f"layout must be one of {', '.join(LAYOUTS)} (or auto), got {self.layout!r}"
                )
            return self.layout
        p = Path(self.root)
        if p.suffix.lower() == ".mat":
            return "nyu-mat"
        if self.split_file and "nyudepthv2" in Path(self.split_file).name:
            return "nyu-sync"
        if "places365" in Path(self.split_file).name.lower() or p.name in ("data_256", "data_large"):
            return "places365"
        return "folder"

    def crop(self) -> int:
        if self.border is not None:
            if self.border < 0:
                raise StitchError(f"border must be >= 0 pixels, got {self.border}")
            return int(self.border)
        return 8 if self.resolved_layout() in ("nyu-mat", "nyu-sync") else 0


@dataclass(frozen=True)
class Item:
    id: str
    source: SourceSpec
    path: str = ""  # image file (empty for nyu-mat)
    depth_path: str = ""  # nyu-sync ground truth
    index: int = -1  # nyu-mat: 0-based row in the .mat
    focal: float | None = None

    def load_rgb(self) -> np.ndarray:  # -> [H, W, 3] float32 in [0, 1], border cropped
        if self.index >= 0:
            import h5py

            with h5py.File(self.source.root, "r") as f:
                img = np.asarray(f["images"][self.index]).transpose(2, 1, 0)  # [3, W, H] -> [H, W, 3]
            rgb = img.astype(np.float32) / 255.0
        else:
            rgb = read_rgb(self.path)
        return _crop(rgb, self.source.crop())

    def load_gt_depth(self) -> np.ndarray | None:  # -> [H, W] metres (0 = invalid) or None
        if self.index >= 0:
            import h5py

            with h5py.File(self.source.root, "r") as f:
                depth = np.asarray(f["depths"][self.index], dtype=np.float32).T
        elif self.depth_path:
            import cv2

            q = cv2.imread(self.depth_path, cv2.IMREAD_UNCHANGED)
            if q is None:
                raise StitchError(f"cannot read NYU depth {self.depth_path} (16-bit PNG, millimetres)")
            depth = q.astype(np.float32) / 1000.0
        else:
            return None
        return _crop(np.nan_to_num(depth, nan=0.0), self.source.crop())

    def intrinsics(self) -> list[list[float]] | None:
        """K of the cropped frame when the dataset knows it (NYU), else None (the pinhole default)."""
        if self.source.resolved_layout() not in ("nyu-mat", "nyu-sync"):
            return None
        K = NYU_K.copy()
        if self.focal:
            K[0, 0] = K[1, 1] = float(self.focal)
        b = self.source.crop()
        K[0, 2] -= b
        K[1, 2] -= b
        return K.tolist()


def _crop(a: np.ndarray, b: int) -> np.ndarray:
    if b <= 0:
        return a
    if a.shape[0] <= 2 * b or a.shape[1] <= 2 * b:
        raise StitchError(f"border {b} px is larger than the {a.shape[1]}x{a.shape[0]} frame")
    return a[b:-b, b:-b]


def path_id(rel: str) -> str:
    """Relative path -> item id unique across sub-folders ('a/b/rgb_1.jpg' -> 'a__b__rgb_1')."""
    parts = [p for p in Path(rel.strip().lstrip("/")).with_suffix("").parts if p not in ("", ".")]
    return "__".join(parts)


def _split_lines(path: str) -> list[list[str]]:
    p = Path(path)
    if not p.is_file():
        raise StitchError(f"split file {p} does not exist")
    return [line.split() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def list_items(spec: SourceSpec) -> list[Item]:
    """Every item of the source, in a stable order; refuses an empty source or duplicate ids."""
    layout = spec.resolved_layout()
    root = Path(spec.root)
    if layout == "nyu-mat":
        items = _nyu_mat_items(spec)
    else:
        if not root.is_dir():
            raise StitchError(f"image folder {root} does not exist ({layout} layout)")
        if layout == "nyu-sync":
            if not spec.split_file:
                raise StitchError("the nyu-sync layout needs its BTS split file (split_file / --split-file)")
            items = []
            for cols in _split_lines(spec.split_file):
                if len(cols) < 2 or cols[1] == "None":  # BTS lists frames without ground truth as None
                    continue
                focal = float(cols[2]) if len(cols) > 2 else None
                rgb = root / cols[0].lstrip("/")
                items.append(
                    Item(path_id(cols[0]), spec, str(rgb), str(root / cols[1].lstrip("/")), -1, focal)
                )
        elif spec.split_file:  # folder / places365 with a file list
            items = [
                Item(path_id(cols[0]), spec, str(root / cols[0].lstrip("/")))
                for cols in _split_lines(spec.split_file)
            ]
        else:
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
            items = [Item(path_id(str(p.relative_to(root))), spec, str(p)) for p in files]
        # a wrong root or split file shows in any sample; stat-ing 1.8 M Places files on a shared file
        # system would take minutes in every rank and shard
        step = max(1, len(items) // 2000)
        missing = [it.path for it in items[::step] if not Path(it.path).is_file()]
        if missing:
            raise StitchError(
                f"{len(missing)} of {len(items[::step])} checked images are missing under {root} "
                f"(first: {missing[0]}); check the root folder against the split file"
            )
    if not items:
        raise StitchError(f"no images in {spec.root} ({layout} layout)")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise StitchError(f"two images of {spec.root} map to the same id {dup!r}; rename one")
    return items


def _nyu_mat_items(spec: SourceSpec) -> list[Item]:
    p = Path(spec.root)
    if not p.is_file():
        raise StitchError(f"NYU labelled file {p} does not exist (nyu_depth_v2_labeled.mat)")
    try:
        import h5py
    except ImportError as exc:
        raise StitchError("reading nyu_depth_v2_labeled.mat needs h5py: pip install 'stitch[train]'") from exc
    try:
        with h5py.File(p, "r") as f:
            if "images" not in f or "depths" not in f:
                raise StitchError(f"{p} has no 'images'/'depths' datasets; is it nyu_depth_v2_labeled.mat?")
            n = int(f["images"].shape[0])
    except OSError as exc:
        raise StitchError(f"{p} is not an HDF5 (MATLAB v7.3) file; give nyu_depth_v2_labeled.mat") from exc
    rows = list(range(n))
    if spec.split_file:
        if spec.split not in ("train", "test"):
            raise StitchError(f"split must be train or test for splits.mat, got {spec.split!r}")
        idx = _read_splits_mat(spec.split_file, spec.split)
        bad = [i for i in idx if not 1 <= i <= n]
        if bad:
            raise StitchError(f"{spec.split_file} lists frame {bad[0]} but {p} has {n} frames")
        rows = [i - 1 for i in idx]
    return [Item(f"nyu_{r + 1:04d}", spec, index=r) for r in rows]


def _read_splits_mat(path: str, split: str) -> list[int]:
    """The official splits.mat (MATLAB v5; v7.3/HDF5 also read): 1-based frame numbers."""
    key = "trainNdxs" if split == "train" else "testNdxs"
    p = Path(path)
    if not p.is_file():
        raise StitchError(f"split file {p} does not exist (splits.mat)")
    try:
        from scipy.io import loadmat

        arr = loadmat(str(p))[key]
    except (NotImplementedError, ValueError):  # v7.3 files are HDF5
        import h5py

        with h5py.File(p, "r") as f:
            arr = np.asarray(f[key])
    except KeyError as exc:
        raise StitchError(f"{p} has no {key}; is it NYU's splits.mat?") from exc
    return [int(v) for v in np.asarray(arr).ravel()]

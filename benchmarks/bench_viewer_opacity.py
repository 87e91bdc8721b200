"""Background show-through of a scene in real web splat viewers, beside stitch's own renderer.

A scene that looks solid in stitch can look see-through elsewhere: web viewers blur each projected
Gaussian less than stitch does (PlayCanvas, the engine behind SuperSplat, adds its "0.3" in half-pixel
units: 0.075 px^2) and cut each one off at sqrt(8) sigma, so one sub-pixel Gaussian per pixel leaves gaps
(see PROFILES below for what each viewer does). This loads a .ply at the photo camera into

  - PlayCanvas (npm `playcanvas`, gsplat component), and
  - @mkkellogg/gaussian-splats-3d (three.js),

in headless Chromium (SwiftShader WebGL), draws it on black and on white, and reports the show-through
fraction  mean |render_white - render_black|  (0 = opaque everywhere, 1 = nothing drawn) per viewer, with
stitch's own render of the same camera for comparison and a PSNR of each viewer's image against stitch's
(a check that the camera conventions match). Also prints the projected size of the Gaussians.

    (cd benchmarks/viewer_opacity && npm install)      # once; node_modules is git-ignored
    .venv/bin/stitch generate PHOTO --mode stage --max-side 256 -o /tmp/kyoto/scene.ply
    .venv/bin/python benchmarks/bench_viewer_opacity.py /tmp/kyoto/scene.ply [--record] [--screenshots docs/]

The camera is the first camera in the run's manifest.json next to the .ply (the photo camera, identity pose,
OpenCV axes). Needs chromium (`apt-get install -y chromium`) and node/npm.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import http.server
import io
import json
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat.cameras import Camera, intrinsics
from splat.formats.io import load_scene
from splat.render import render
from viewer.chromium import SWIFTSHADER_WEBGL, HeadlessChromium, find_chromium

HARNESS = Path(__file__).resolve().parent / "viewer_opacity"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
VIEWERS = ("playcanvas", "mkkellogg")


def harness_ready() -> bool:
    """True when chromium and the harness's npm packages are installed."""
    modules = HARNESS / "node_modules"
    return (
        find_chromium() is not None
        and (modules / "playcanvas" / "build" / "playcanvas.mjs").is_file()
        and (modules / "@mkkellogg" / "gaussian-splats-3d").is_dir()
        and (modules / "three" / "build" / "three.module.js").is_file()
    )


def photo_camera(ply: Path, manifest: Path | None = None, max_side: int | None = None) -> Camera:
    """The run's first camera (manifest.json beside the .ply), else a centred square max_side camera."""
    manifest = manifest or ply.parent / "manifest.json"
    if manifest.is_file():
        return Camera.from_dict(json.loads(manifest.read_text())["cameras"][0])
    side = max_side or 256
    return Camera(side, side, intrinsics(side, side), np.eye(4))


# --- stitch's own renderer --------------------------------------------------------------------------
def stitch_renders(ply: Path, camera: Camera) -> dict[str, np.ndarray]:
    """stitch's render of the scene on black and on white, uint8 [H, W, 3] each (as a viewer's screenshot)."""
    g = load_scene(ply)
    out = {}
    with torch.no_grad():
        for name, bg in (("black", 0.0), ("white", 1.0)):
            r = render(
                g,
                torch.from_numpy(camera.world_to_camera)[None].float(),
                torch.from_numpy(camera.K)[None].float(),
                camera.width,
                camera.height,
                background=torch.full((3,), bg),
            )
            out[name] = (r.rgb[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return out


def splat_sizes(ply: Path, camera: Camera) -> dict[str, float]:
    """Projected size of the Gaussians at the camera (before any low-pass): median sigma along the major
    and the minor axis in px, the share PlayCanvas drops (drawn half-extent sqrt(8 (sigma^2 + 0.075)) under
    1 px along the major axis), median opacity."""
    g = load_scene(ply)
    _, cov, opac, front, _ = projected_covariances(g, camera)
    cov, opac = cov[front], opac[front]
    a, b, d = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    rad = np.sqrt(np.maximum(0.25 * (a - d) ** 2 + b * b, 0.0))
    major = np.maximum(0.5 * (a + d) + rad, 0.0)
    minor = np.maximum(0.5 * (a + d) - rad, 0.0)
    return {
        "n": int(front.sum()),
        "median_sigma_px": float(np.median(np.sqrt(major))),
        "median_minor_sigma_px": float(np.median(np.sqrt(minor))),
        "share_under_playcanvas_cutoff": float((np.sqrt(8 * (major + 0.075)) < 1.0).mean()),
        "median_opacity": float(np.median(opac)),
    }


# --- a CPU stand-in for the viewers' rasterisers ----------------------------------------------------
# How each renderer turns a Gaussian into pixel alphas (read from their shaders): the 2D covariance gets a
# low-pass added (px^2), the splat is drawn out to `extent` sigmas, alpha = opacity * falloff, fragments
# under 1/255 are dropped. PlayCanvas builds the 2D covariance with a focal of viewport * P00, twice the
# pixel focal, so its "0.3" is 0.075 px^2 and its 2-unit minPixelSize drops splats whose drawn half-extent
# is under 1 px. mkkellogg keeps the eigenvalues of the 2D covariance at least 2 sqrt(0.1) apart.
PROFILES: dict[str, dict] = {
    "stitch": {"lowpass": 0.3, "extent": 3.0, "min_px": 0.0, "normalised": False, "split": 0.0},
    "playcanvas": {"lowpass": 0.075, "extent": 8**0.5, "min_px": 1.0, "normalised": True, "split": 0.0},
    "mkkellogg": {"lowpass": 0.3, "extent": 8**0.5, "min_px": 0.0, "normalised": False, "split": 0.1},
}


def projected_covariances(g, camera: Camera) -> tuple[np.ndarray, ...]:
    """EWA projection at the camera -> centres [N, 2] (pixels), 2D covariances [N, 2, 2], opacity [N],
    in front [N] (bool), view depth [N]."""
    w2c = camera.world_to_camera
    m = (w2c[:3, :3] @ g.means.detach().double().numpy().T).T + w2c[:3, 3]
    s = g.scales_linear().detach().double().numpy()
    w, x, y, z = g.quats_normalised().detach().double().numpy().T
    R = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )
    M = w2c[:3, :3] @ R * s[:, None, :]
    front = m[:, 2] > 0.01
    zc = np.where(front, m[:, 2], 1.0)
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    J = np.zeros((len(m), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = fx / zc, -fx * m[:, 0] / zc**2
    J[:, 1, 1], J[:, 1, 2] = fy / zc, -fy * m[:, 1] / zc**2
    JM = J @ M
    cov = JM @ JM.transpose(0, 2, 1)
    uv = np.stack([fx * m[:, 0] / zc + cx, fy * m[:, 1] / zc + cy], -1)
    return uv, cov, g.opacities_linear().detach().double().numpy(), front, m[:, 2]


def _fragments(g, camera: Camera, p: dict, offset: float, max_radius: int = 24):
    """Yield (pixel index, alpha, Gaussian index) arrays of every fragment `profile` p would blend."""
    uv, cov, opac, front, _ = projected_covariances(g, camera)
    a = cov[:, 0, 0] + p["lowpass"]
    d = cov[:, 1, 1] + p["lowpass"]
    b = cov[:, 0, 1]
    if p["split"] > 0:  # mkkellogg: eigenvalues pushed apart, eigenvectors kept
        mid, rad = 0.5 * (a + d), np.sqrt(np.maximum(0.25 * (a - d) ** 2 + b * b, p["split"]))
        l1, l2 = mid + rad, mid - rad
        ev = np.stack([b, l1 - a], -1)
        ev /= np.maximum(np.linalg.norm(ev, axis=-1, keepdims=True), 1e-12)
        ev[np.linalg.norm(np.stack([b, l1 - a], -1), axis=-1) < 1e-12] = (1.0, 0.0)
        a = l1 * ev[:, 0] ** 2 + l2 * ev[:, 1] ** 2
        d = l1 * ev[:, 1] ** 2 + l2 * ev[:, 0] ** 2
        b = (l1 - l2) * ev[:, 0] * ev[:, 1]
        front &= l2 > 0
    det = a * d - b * b
    lam1 = 0.5 * (a + d) + np.sqrt(np.maximum(0.25 * (a - d) ** 2 + b * b, 0.0))
    half = p["extent"] * np.sqrt(lam1)  # drawn half-extent along the major axis, px
    keep = front & (det > 0) & (half >= p["min_px"]) & (opac >= 1.0 / 255.0)
    W, H = camera.width, camera.height
    # the Gaussian's value at pixel centres (i + 0.5 + offset, j + 0.5 + offset)
    keep &= (uv[:, 0] > -half) & (uv[:, 0] < W + half) & (uv[:, 1] > -half) & (uv[:, 1] < H + half)
    radius = np.clip(np.ceil(half), 1, max_radius).astype(int)
    e4 = np.exp(-0.5 * p["extent"] ** 2)
    for r in np.unique(radius[keep]):
        sel = np.nonzero(keep & (radius == r))[0]
        for chunk in np.array_split(sel, max(1, len(sel) * (2 * r + 1) ** 2 // 4_000_000 + 1)):
            off = np.arange(-r, r + 1)
            px = np.floor(uv[chunk, 0] - 0.5 - offset)[:, None, None] + off[None, None, :]
            py = np.floor(uv[chunk, 1] - 0.5 - offset)[:, None, None] + off[None, :, None]
            dx = px + 0.5 + offset - uv[chunk, 0, None, None]
            dy = py + 0.5 + offset - uv[chunk, 1, None, None]
            ia, ib, idd = (v[chunk, None, None] / det[chunk, None, None] for v in (d, -b, a))
            q = ia * dx * dx + 2 * ib * dx * dy + idd * dy * dy  # Mahalanobis distance squared
            g_ = np.exp(-0.5 * q)
            if p["normalised"]:
                g_ = (g_ - e4) / (1 - e4)
            alpha = np.minimum(0.99, opac[chunk, None, None] * g_)
            ok = (q <= p["extent"] ** 2) & (alpha >= 1.0 / 255.0) & (px >= 0) & (px < W) & (py >= 0)
            ok &= py < H
            ids = np.broadcast_to(chunk[:, None, None], ok.shape)[ok]
            yield (py * W + px)[ok].astype(np.int64), alpha[ok], ids


def proxy_show_through(g, camera: Camera, profile: str | dict = "playcanvas", offset: float = 0.0) -> float:
    """Mean background transmittance over the image when `g` is drawn the way `profile` draws it.

    Transmittance is the product of (1 - alpha) over the Gaussians at a pixel, whatever their order, so no
    sorting is needed. `offset` moves the pixel grid by that many pixels in x and y (a viewer that samples
    between stitch's pixel centres)."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    n = camera.width * camera.height
    log_t = np.zeros(n)
    for idx, alpha, _ in _fragments(g, camera, p, offset):
        log_t += np.bincount(idx, weights=np.log1p(-alpha), minlength=n)
    return float(np.exp(log_t).mean())


def proxy_render(g, camera: Camera, profile: str | dict = "playcanvas", offset: float = 0.0,
                 background: float = 0.0) -> np.ndarray:  # fmt: skip
    """The image [H, W, 3] in [0, 1] `profile` would draw: fragments blended front to back (by view depth)
    with the Gaussians' base colour (no view-dependent SH)."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    parts = list(_fragments(g, camera, p, offset))
    n = camera.width * camera.height
    if not parts:
        return np.full((camera.height, camera.width, 3), background)
    idx, alpha, ids = (np.concatenate(x) for x in zip(*parts, strict=True))
    depth = projected_covariances(g, camera)[4]
    order = np.lexsort((depth[ids], idx))  # by pixel, then near to far
    idx, alpha, ids = idx[order], alpha[order], ids[order]
    log1m = np.log1p(-alpha)
    cum = np.cumsum(log1m)
    start = np.searchsorted(idx, idx)  # first fragment of each fragment's pixel
    before = cum - log1m - np.where(start > 0, cum[start - 1], 0.0)  # log T in front of each fragment
    weight = alpha * np.exp(before)
    rgb = g.rgb().detach().double().numpy()[ids]
    img = np.stack([np.bincount(idx, weights=weight * rgb[:, c], minlength=n) for c in range(3)], -1)
    t = np.exp(np.bincount(idx, weights=log1m, minlength=n))
    return (img + t[:, None] * background).reshape(camera.height, camera.width, 3)


# --- the browser side -------------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".ply": "application/octet-stream",
    }

    def __init__(self, *args, scene: Path, **kwargs) -> None:
        self._scene = scene
        super().__init__(*args, directory=str(HARNESS), **kwargs)

    def translate_path(self, path: str) -> str:
        if path.split("?")[0] == "/scene" + self._scene.suffix.lower():
            return str(self._scene)
        return super().translate_path(path)

    def log_message(self, *args) -> None:  # quiet
        pass


@contextlib.contextmanager
def _serve(scene: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, scene=scene))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _grab(browser: HeadlessChromium, width: int, height: int) -> np.ndarray:
    from PIL import Image

    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    data = base64.b64decode(browser.call("Page.captureScreenshot", format="png", clip=clip)["data"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def viewer_renders(ply: Path, camera: Camera, viewer: str, timeout: float = 180.0) -> dict[str, np.ndarray]:
    """The scene in `viewer` on black and on white, uint8 [H, W, 3] each, once its sort has settled.
    `ply` may also be a .splat or .spz file (mkkellogg reads all three; PlayCanvas is given .ply only)."""
    if viewer not in VIEWERS:
        raise ValueError(f"viewer must be one of {VIEWERS}")
    fmt = ply.suffix.lower().lstrip(".")
    if fmt not in ("ply", "splat", "spz") or (viewer == "playcanvas" and fmt != "ply"):
        shown = ".ply" if viewer == "playcanvas" else ".ply, .splat or .spz"
        raise ValueError(f"{viewer} is shown {shown} files here, not {ply.name}")
    K = camera.K
    if abs(K[0, 2] - camera.width / 2) > 1e-6 or abs(K[1, 2] - camera.height / 2) > 1e-6:
        raise ValueError("the web viewers take a centred principal point only")
    if not np.allclose(camera.world_to_camera, np.eye(4)):
        raise ValueError("this harness places the viewers' camera at the identity pose (the photo camera)")
    w, h = camera.width, camera.height
    with _serve(ply.resolve()) as base:
        url = (f"{base}/index.html?viewer={viewer}&ply=/scene.{fmt}&format={fmt}&w={w}&h={h}"
               f"&fx={K[0, 0]}&fy={K[1, 1]}&cx={K[0, 2]}&cy={K[1, 2]}")  # fmt: skip
        with HeadlessChromium("about:blank", w, h, timeout=60.0, extra_flags=SWIFTSHADER_WEBGL) as browser:
            browser.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1,
                         mobile=False)  # fmt: skip
            browser.call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while True:
                state = browser.evaluate("window.__state")
                if state == "ready":
                    break
                if isinstance(state, str) and state.startswith("error"):
                    raise RuntimeError(f"{viewer}: {state}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{viewer} did not load the scene in {timeout:.0f} s (state {state})")
                time.sleep(0.5)
            out = {}
            for name, rgb in (("black", (0, 0, 0)), ("white", (1, 1, 1))):
                browser.evaluate(f"window.setBackground({rgb[0]}, {rgb[1]}, {rgb[2]})", await_promise=True)
                # The viewers sort in a worker: take frames until two in a row agree.
                prev = _grab(browser, w, h)
                for _ in range(20):
                    browser.evaluate("new Promise(r => setTimeout(r, 300))", await_promise=True)
                    cur = _grab(browser, w, h)
                    if np.array_equal(cur, prev):
                        break
                    prev = cur
                out[name] = cur
    return out


# --- the figure ------------------------------------------------------------------------------------
def show_through(black: np.ndarray, white: np.ndarray) -> float:
    """Mean |white - black| over pixels and channels, as a fraction of full scale (uint8 inputs)."""
    return float(np.abs(white.astype(np.float64) - black.astype(np.float64)).mean() / 255.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def measure(ply: Path, camera: Camera, viewers: tuple[str, ...] = VIEWERS) -> dict[str, dict]:
    """{renderer: {show_through, proxy, psnr_vs_stitch, black, white}} for stitch and each viewer; `proxy`
    is proxy_show_through's estimate of the same figure without a browser."""
    g = load_scene(ply)
    ref = stitch_renders(ply, camera)
    rows = {
        "stitch": {
            **ref,
            "show_through": show_through(ref["black"], ref["white"]),
            "proxy": proxy_show_through(g, camera, "stitch"),
            "psnr_vs_stitch": None,
        }
    }
    for v in viewers:
        imgs = viewer_renders(ply, camera, v)
        rows[v] = {
            **imgs,
            "show_through": show_through(imgs["black"], imgs["white"]),
            "proxy": proxy_show_through(g, camera, v),
            "psnr_vs_stitch": psnr(imgs["black"], ref["black"]),
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ply", type=Path)
    ap.add_argument("--manifest", type=Path, default=None, help="run manifest with the photo camera")
    ap.add_argument("--label", default="", help="what this scene is (for RESULTS.md)")
    ap.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for <viewer>.png screenshots")
    args = ap.parse_args()
    if not harness_ready():
        sys.exit("needs chromium and `npm install` in benchmarks/viewer_opacity")
    camera = photo_camera(args.ply, args.manifest)
    sizes = splat_sizes(args.ply, camera)
    rows = measure(args.ply, camera)
    print(f"scene {args.ply} ({sizes['n']} Gaussians in front), camera {camera.width}x{camera.height} "
          f"f={camera.focal:.0f}")  # fmt: skip
    print(f"median projected sigma {sizes['median_sigma_px']:.2f} px (minor axis "
          f"{sizes['median_minor_sigma_px']:.2f} px), "
          f"{100 * sizes['share_under_playcanvas_cutoff']:.1f} % dropped by PlayCanvas's size cut-off, "
          f"median opacity {sizes['median_opacity']:.2f}")  # fmt: skip
    print("| renderer | show-through | CPU proxy | PSNR vs stitch (dB) |\n| --- | --- | --- | --- |")
    for name, r in rows.items():
        p = "-" if r["psnr_vs_stitch"] is None else f"{r['psnr_vs_stitch']:.1f}"
        print(f"| {name} | {100 * r['show_through']:.2f} % | {100 * r['proxy']:.2f} % | {p} |")
    if args.screenshots:
        from PIL import Image

        args.screenshots.mkdir(parents=True, exist_ok=True)
        strip = np.concatenate([rows[n]["white"] for n in rows], axis=1)
        Image.fromarray(strip).save(args.screenshots / "viewer_opacity.png", optimize=True)
        print(f"wrote {args.screenshots / 'viewer_opacity.png'} (left to right: {', '.join(rows)}; on white)")
    if args.record:
        date = datetime.date.today().isoformat()
        machine = f"{platform.machine()}, headless Chromium (SwiftShader)"
        viewers = ", ".join(f"{n} {100 * r['show_through']:.2f} %" for n, r in rows.items() if n != "stitch")
        line = (
            f"| {date} | {machine} | background show-through at the photo camera, "
            f"{args.label or args.ply.name} (`benchmarks/bench_viewer_opacity.py`) | {viewers} | "
            f"stitch's renderer {100 * rows['stitch']['show_through']:.2f} % | "
            f"median sigma {sizes['median_sigma_px']:.2f} px |"
        )
        with RESULTS.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()

"""One render(...) for every device: gsplat's CUDA rasterizer on GPUs, the project's tile rasterizer on CPUs.

Both backends follow the same conventions (gsplat 1.5.3's), so an image rendered on a laptop matches the one
rendered on a GPU: view-dependent SH colour + 0.5 clamped at 0, EWA projection with a 0.3 px low-pass,
opacity-aware 3-sigma extents, alpha >= 1/255, alpha <= 0.999, transmittance stop at 1e-4, and expected
depth = sum(w_i z_i) / sum(w_i) (0 where nothing was drawn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from splat.cpu.project import project_with_colors
from splat.cpu.raster import rasterize_rgbd
from splat.errors import StitchError
from splat.gaussians import Gaussians
from splat.projection import camera_centres, project
from splat.sh import eval_sh

if TYPE_CHECKING:
    from splat.cameras import Camera


@dataclass
class RenderOutput:
    rgb: Tensor  # [C, H, W, 3]
    depth: Tensor  # [C, H, W, 1] expected z-depth, 0 where alpha == 0
    alpha: Tensor  # [C, H, W, 1] accumulated opacity
    meta: dict[str, Any] = field(default_factory=dict)  # means2d [C,N,2], radii [C,N,2], depths [C,N], ...


def _check_inputs(gaussians: Gaussians, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                  sh_degree: int) -> None:  # fmt: skip
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise StitchError(f"viewmats must be [C, 4, 4] world-to-camera matrices, got {tuple(viewmats.shape)}")
    if Ks.shape != (viewmats.shape[0], 3, 3):
        raise StitchError(
            f"Ks must be [C, 3, 3] matching viewmats' C={viewmats.shape[0]}, got {tuple(Ks.shape)}"
        )
    if width <= 0 or height <= 0:
        raise StitchError(f"image size must be positive, got {width}x{height}")
    if not 0 <= sh_degree <= gaussians.sh_degree:
        raise StitchError(
            f"sh_degree must be in 0..{gaussians.sh_degree} for these Gaussians, got {sh_degree}"
        )
    if viewmats.device != gaussians.device or Ks.device != gaussians.device:
        raise StitchError(
            f"cameras on {viewmats.device}/{Ks.device}, Gaussians on {gaussians.device}; move them together"
        )


def render(
    gaussians: Gaussians,
    viewmats: Tensor,  # [C, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    background: Tensor | None = None,  # [3]
    near: float = 0.01,
    far: float = 1e10,
    absgrad: bool = False,
    packed: bool = False,
) -> RenderOutput:
    """Render C views of the Gaussians; differentiable w.r.t. every Gaussian parameter.

    The backend follows the Gaussians' device. `packed` only affects the CUDA backend (gsplat's sparse
    layout); the CPU backend always returns the dense [C, N, ...] layout in `meta`.
    """
    degree = gaussians.sh_degree if sh_degree is None else int(sh_degree)
    _check_inputs(gaussians, viewmats, Ks, width, height, degree)
    dtype = gaussians.params["means"].dtype
    viewmats = viewmats.to(dtype)
    Ks = Ks.to(dtype)
    if background is not None:
        background = background.to(device=gaussians.device, dtype=dtype)
    if uses_gsplat(gaussians.device):
        return _render_cuda(
            gaussians, viewmats, Ks, width, height, degree, background, near, far, absgrad, packed
        )
    if gaussians.device.type != "cpu":
        raise StitchError(f"cannot render on device {gaussians.device}; use 'cpu' or 'cuda'")
    return _render_cpu(gaussians, viewmats, Ks, width, height, degree, background, near, far, absgrad)


def uses_gsplat(device: torch.device | str) -> bool:
    """True where renders go through gsplat.rasterization (CUDA). Strategies and refinement ask this too,
    so the CUDA branches can be exercised on CPU in CI by replacing it together with gsplat.rasterization
    (tests/test_gsplat_contract.py)."""
    return torch.device(device).type == "cuda"


def _render_cuda(gaussians, viewmats, Ks, width, height, degree, background, near, far, absgrad, packed):
    import gsplat  # imported here: CPU-only users never need its CUDA extension

    p = gaussians.params
    colors, alphas, meta = gsplat.rasterization(
        means=p["means"],
        quats=p["quats"],
        scales=torch.exp(p["scales"]),
        opacities=torch.sigmoid(p["opacities"]),
        colors=torch.cat([p["sh0"], p["shN"]], dim=1),
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        sh_degree=degree,
        backgrounds=None if background is None else background.expand(viewmats.shape[0], 3),
        render_mode="RGB+ED",
        absgrad=absgrad,
        packed=packed,
    )
    return RenderOutput(rgb=colors[..., :3], depth=colors[..., 3:4], alpha=alphas, meta=meta)


def _render_cpu(gaussians, viewmats, Ks, width, height, degree, background, near, far, absgrad):
    p = gaussians.params
    C = viewmats.shape[0]
    opacities = torch.sigmoid(p["opacities"])  # [N]
    if viewmats.requires_grad or Ks.requires_grad:  # pose refinement: the torch path differentiates cameras
        means2d, conics, colors, radii = _project_torch(
            p, opacities, viewmats, Ks, width, height, degree, near, far
        )
    else:
        means2d, conics, colors, radii = project_with_colors(
            p["means"], p["quats"], p["scales"], p["sh0"], p["shN"], opacities, viewmats, Ks, width, height,
            degree, near=near, far=far,
        )  # fmt: skip
    depths = colors[..., 3]  # [C, N]: depth rides through the compositor as a 4th colour channel
    opac = opacities[None].expand(C, -1)
    bg = None if background is None else background.expand(C, 3)
    rgb, depth, alpha = rasterize_rgbd(means2d, conics, colors, opac, radii, width, height, bg, absgrad)
    meta = {
        "means2d": means2d,
        "radii": radii,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "gaussian_ids": None,
        "camera_ids": None,
        "width": width,
        "height": height,
        "n_cameras": C,
        "n_batches": 1,
        "tile_size": 16,
    }
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha, meta=meta)


def _project_torch(p, opacities, viewmats, Ks, width, height, degree, near, far):
    """The same projection and colour as splat.cpu.project, in plain torch autograd (slower, but it also
    differentiates the camera matrices) -> means2d, conics, colours [C, N, 4] (rgb, depth), radii."""
    C = viewmats.shape[0]
    proj = project(
        p["means"], p["quats"], torch.exp(p["scales"]), viewmats, Ks, width, height,
        opacities=opacities, near=near, far=far,
    )  # fmt: skip
    coeffs = torch.cat([p["sh0"], p["shN"]], dim=1)  # [N, K, 3]
    if degree == 0:
        rgb = eval_sh(0, p["means"], coeffs)[None].expand(C, -1, -1)  # no view dependence
    else:
        dirs = p["means"][None] - camera_centres(viewmats)[:, None]  # [C, N, 3]
        rgb = eval_sh(degree, dirs, coeffs[None].expand(C, -1, -1, -1))
    rgb = torch.clamp_min(rgb + 0.5, 0.0)  # [C, N, 3]
    return proj.means2d, proj.conics, torch.cat([rgb, proj.depths[..., None]], dim=-1), proj.radii


def camera_tensors(cameras, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Stack Cameras' world_to_camera [C, 4, 4] and K [C, 3, 3] as float32 tensors on `device`."""
    viewmats = torch.from_numpy(np.stack([np.asarray(c.world_to_camera, np.float64) for c in cameras]))
    Ks = torch.from_numpy(np.stack([np.asarray(c.K, np.float64) for c in cameras]))
    return viewmats.float().to(device), Ks.float().to(device)


def render_camera(gaussians: Gaussians, camera: Camera, **kw: Any) -> RenderOutput:
    """Render one splat.cameras.Camera (C = 1); keyword arguments go to render()."""
    viewmats, Ks = camera_tensors([camera], gaussians.device)
    return render(gaussians, viewmats, Ks, int(camera.width), int(camera.height), **kw)

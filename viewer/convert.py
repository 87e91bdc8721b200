"""Pure numpy conversions between stitch's data and what viser draws (no viser import, easy to test).

Gaussians -> splats: viser's `add_gaussian_splats` wants centres [N, 3], covariances [N, 3, 3]
(Σ = R S Sᵀ Rᵀ with S = diag(exp(log-scales))), rgb [N, 3] in [0, 1] (the degree-0 SH colour
0.5 + C0 * sh0, clamped) and opacities [N, 1] (sigmoid of the logits).

Cameras: stitch and viser both use OpenCV camera axes (x right, y down, z forward). viser poses are
camera-to-world (`wxyz` quaternion = R, `position` = t in p_world = R p_cam + t), with a *vertical*
field of view in radians; frusta look along +z like OpenCV. So a stitch world-to-camera matrix maps to
viser by inverting it; the client camera's pose inverts back into a world-to-camera matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from splat.cameras import Camera

SH_C0 = 0.28209479177387814


@dataclass
class SplatArrays:
    centers: np.ndarray  # [N, 3] float32
    covariances: np.ndarray  # [N, 3, 3] float32
    rgbs: np.ndarray  # [N, 3] float32 in [0, 1]
    opacities: np.ndarray  # [N, 1] float32 in [0, 1]

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def subset(self, index: np.ndarray | slice) -> SplatArrays:
        i = index
        return SplatArrays(self.centers[i], self.covariances[i], self.rgbs[i], self.opacities[i])


def _numpy(value) -> np.ndarray:
    """Tensor or array-like -> numpy float32 (detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)


def quats_to_matrices(quats: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] (w, x, y, z), any norm -> rotation matrices [N, 3, 3]; a zero quaternion -> I."""
    q = np.asarray(quats, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return R.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion [4] (w, x, y, z) with w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[0] < 0 else quat


def gaussians_to_splats(tensors: Mapping) -> SplatArrays:
    """Gaussians' parameters (keys means, scales, quats, opacities, sh0; tensors or arrays) -> SplatArrays."""
    missing = [k for k in ("means", "scales", "quats", "opacities", "sh0") if k not in tensors]
    if missing:
        raise ValueError(f"Gaussian snapshot lacks {', '.join(missing)}; pass Gaussians.tensors()")
    means = _numpy(tensors["means"]).reshape(-1, 3)
    n = len(means)
    # float32 is plenty: viser ships covariances to the browser as float16.
    scales = np.exp(_numpy(tensors["scales"]).reshape(n, 3))
    rot = quats_to_matrices(_numpy(tensors["quats"]).reshape(n, 4)).astype(np.float32)  # [N, 3, 3]
    M = rot * scales[:, None, :]  # R S: column j scaled by s_j
    cov = np.matmul(M, np.swapaxes(M, 1, 2))
    rgb = np.clip(0.5 + np.float32(SH_C0) * _numpy(tensors["sh0"]).reshape(n, 3), 0.0, 1.0)
    opacity = 1.0 / (1.0 + np.exp(-_numpy(tensors["opacities"]).reshape(n, 1)))
    return SplatArrays(means, cov, rgb.astype(np.float32), opacity.astype(np.float32))


def preview_splats(tensors: Mapping, budget: int, seed: int = 0) -> tuple[SplatArrays, int]:
    """The splats to send the browser: all of them, or a seeded uniform sample of `budget` -> (splats, total).

    Only the sample is converted. Generated scenes are surfaces seeded one Gaussian per pixel, so keeping
    1 in k leaves holes; scaling each kept covariance by k (its footprint area by k) covers them again. The
    factor is capped at 4 so a very large scene turns blurry rather than into huge blobs. A preview, not the
    scene: the server-side render shows the full one.
    """
    if budget <= 0:
        raise ValueError(f"splat budget must be positive, got {budget}")
    n = int(np.shape(tensors["means"])[0]) if "means" in tensors else 0
    if n <= budget:
        return gaussians_to_splats(tensors), n
    keep = np.sort(np.random.default_rng(seed).choice(n, size=budget, replace=False))
    sample = {k: _numpy(v)[keep] for k, v in tensors.items() if k != "shN"}
    splats = gaussians_to_splats(sample)
    splats.covariances *= np.float32(min(n / budget, 4.0))
    return splats, n


def chunk_slices(n: int, chunk_size: int) -> list[slice]:
    """Split n items into consecutive slices of at most chunk_size (none for n == 0)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_size}")
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


# --- cameras ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViserPose:
    """A camera as viser wants it: camera-to-world pose, vertical FOV, and the orbit target."""

    wxyz: np.ndarray  # [4]
    position: np.ndarray  # [3]
    fov: float  # vertical, radians
    aspect: float  # width / height
    look_at: np.ndarray  # [3] a point on the optical axis, `distance` ahead
    up: np.ndarray  # [3] world direction of the camera's -y axis


def vertical_fov(camera: Camera) -> float:
    return 2.0 * math.atan(camera.height / (2.0 * float(camera.K[1, 1])))


def camera_to_viser(camera: Camera, distance: float = 1.0) -> ViserPose:
    """stitch Camera (world-to-camera, OpenCV) -> viser pose (camera-to-world, OpenCV axes as well)."""
    c2w = np.linalg.inv(camera.world_to_camera)
    R, t = c2w[:3, :3], c2w[:3, 3]
    return ViserPose(
        wxyz=matrix_to_quat(R),
        position=t.copy(),
        fov=vertical_fov(camera),
        aspect=camera.width / camera.height,
        look_at=t + R[:, 2] * distance,
        up=-R[:, 1],
    )


def camera_from_viser(wxyz, position, fov: float, width: int, height: int) -> Camera:
    """viser camera (camera-to-world quaternion + position, vertical FOV in radians) -> stitch Camera.

    The intrinsics are a centred pinhole with square pixels, fy set by the vertical FOV at `height`.
    """
    if not 0.0 < fov < math.pi:
        raise ValueError(f"field of view must be in (0, pi) radians, got {fov}")
    R = quats_to_matrices(np.asarray(wxyz, dtype=np.float64)[None])[0]
    c2w = np.eye(4)
    c2w[:3, :3] = R
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ c2w[:3, 3]
    f = height / (2.0 * math.tan(fov / 2.0))
    K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    return Camera(int(width), int(height), K, w2c)


def thumbnail(image: np.ndarray, max_width: int) -> np.ndarray:
    """[H, W, 3] uint8 (or float in [0, 1]) -> uint8 RGB no wider than max_width (area-averaged)."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3])
    h, w = img.shape[:2]
    if w <= max_width:
        return img
    size = (max_width, max(1, round(h * max_width / w)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def overview_pose(camera: Camera, depth: float = 3.0) -> ViserPose:
    """A view from behind and above `camera`, looking along its axis at the scene `depth` ahead (the
    scene's typical distance): shows the frusta and what they see."""
    back, lift, ahead = 0.35 * depth, 0.15 * depth, depth
    pose = camera_to_viser(camera)
    R = quats_to_matrices(pose.wxyz[None])[0]
    forward, down = R[:, 2], R[:, 1]
    position = pose.position - back * forward - lift * down
    look_at = pose.position + ahead * forward
    z = (look_at - position) / np.linalg.norm(look_at - position)
    y = down - (down @ z) * z
    y /= np.linalg.norm(y)
    rot = np.stack([np.cross(y, z), y, z], axis=1)
    fov = min(pose.fov * 1.3, math.radians(100))
    return ViserPose(matrix_to_quat(rot), position, fov, pose.aspect, look_at, -y)

"""Forward projection kernel: per camera and Gaussian, EWA 2D mean, conic, radii and SH colour + depth."""

from __future__ import annotations

import math

import numpy as np

from splat.cpu.jit import jit
from splat.cpu.project_common import camera_terms, gaussians_of, rotation
from splat.cpu.sh_basis import sh_basis

ALPHA_THRESHOLD = 1.0 / 255.0


@jit
def project_forward(jobs, means, quats, log_scales, opac, sh0, shN, degree, viewmats, Ks, campos, width,
                    height, eps2d, near, far, m2d, conics, colors, radii):  # fmt: skip
    """Forward: m2d [C,N,2], conics [C,N,3], colors [C,N,4] (rgb + depth), radii [C,N,2] (0 = culled)."""
    C, N = m2d.shape[0], m2d.shape[1]
    basis = np.zeros(16)
    M = np.empty((3, 3))
    S = np.empty((3, 3))
    TW = np.empty((2, 3))
    R = np.empty((3, 3))
    t = np.empty(3)
    for g in gaussians_of(jobs, N):
        rotation(quats[g], R)
        for i in range(3):
            for j in range(3):
                M[i, j] = R[i, j] * math.exp(log_scales[g, j])
        for i in range(3):
            for j in range(3):
                S[i, j] = M[i, 0] * M[j, 0] + M[i, 1] * M[j, 1] + M[i, 2] * M[j, 2]
        o = opac[g]
        extend = 3.33
        if o >= ALPHA_THRESHOLD:
            extend = min(extend, math.sqrt(2.0 * math.log(o / ALPHA_THRESHOLD)))
        for c in range(C):
            K = Ks[c]
            fx, fy = K[0, 0], K[1, 1]
            uc, vc, _, _ = camera_terms(viewmats[c], K, width, height, means[g], t)
            colors[c, g, 3] = t[2]
            radii[c, g, 0] = 0
            radii[c, g, 1] = 0
            for i in range(2):
                m2d[c, g, i] = 0.0
            for i in range(3):
                conics[c, g, i] = 0.0
                colors[c, g, i] = 0.0
            if not (t[2] > near and t[2] < far) or o < ALPHA_THRESHOLD:
                continue
            rz = 1.0 / t[2]
            for j in range(3):  # rows of J W
                TW[0, j] = fx * rz * viewmats[c, 0, j] - fx * uc * rz * viewmats[c, 2, j]
                TW[1, j] = fy * rz * viewmats[c, 1, j] - fy * vc * rz * viewmats[c, 2, j]
            a = b = d = 0.0
            for i in range(3):
                for j in range(3):
                    a += TW[0, i] * S[i, j] * TW[0, j]
                    b += TW[0, i] * S[i, j] * TW[1, j]
                    d += TW[1, i] * S[i, j] * TW[1, j]
            a += eps2d
            d += eps2d
            det = a * d - b * b
            if not det > 0.0:
                continue
            mx = fx * t[0] * rz + K[0, 2]
            my = fy * t[1] * rz + K[1, 2]
            rx = math.ceil(extend * math.sqrt(a))
            ry = math.ceil(extend * math.sqrt(d))
            if mx + rx <= 0 or mx - rx >= width or my + ry <= 0 or my - ry >= height:
                continue
            radii[c, g, 0] = rx
            radii[c, g, 1] = ry
            m2d[c, g, 0] = mx
            m2d[c, g, 1] = my
            conics[c, g, 0] = d / det
            conics[c, g, 1] = -b / det
            conics[c, g, 2] = a / det
            # colour: SH at the direction from the camera centre to the mean
            dx = means[g, 0] - campos[c, 0]
            dy = means[g, 1] - campos[c, 1]
            dz = means[g, 2] - campos[c, 2]
            dn = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            sh_basis(degree, dx / dn, dy / dn, dz / dn, basis)
            for ch in range(3):
                v = basis[0] * sh0[g, 0, ch]
                for k in range(1, (degree + 1) ** 2):
                    v += basis[k] * shN[g, k - 1, ch]
                colors[c, g, ch] = max(v + 0.5, 0.0)

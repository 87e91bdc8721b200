"""Backward projection kernel: gradients of means, quaternions, log-scales and SH from the projection's."""

from __future__ import annotations

import math

import numpy as np

from splat.cpu.jit import jit
from splat.cpu.project_common import camera_terms, gaussians_of, rotation
from splat.cpu.sh_basis import sh_basis, sh_basis_grad


@jit
def project_backward(jobs, means, quats, log_scales, sh0, shN, degree, viewmats, Ks, campos, width, height,
                     eps2d, radii, v_m2d, v_conics, v_colors,
                     g_means, g_quats, g_log_scales, g_sh0, g_shN):  # fmt: skip
    """Backward of project_forward for the Gaussians that were not culled; all g_* arrays start at zero."""
    C, N = v_m2d.shape[0], v_m2d.shape[1]
    nb = (degree + 1) ** 2
    basis = np.zeros(16)
    wb = np.zeros(16)
    M = np.empty((3, 3))
    S = np.empty((3, 3))
    TW = np.empty((2, 3))
    gS = np.zeros((3, 3))
    gM = np.empty((3, 3))
    R = np.empty((3, 3))
    t = np.empty(3)
    gT = np.empty((2, 3))
    gt = np.empty(3)
    gp = np.empty(3)
    s = np.empty(3)
    for g in gaussians_of(jobs, N):
        visible = False
        for c in range(C):
            visible = visible or (radii[c, g, 0] > 0 and radii[c, g, 1] > 0)
        if not visible:
            continue
        w, x, y, z, qn = rotation(quats[g], R)
        for j in range(3):
            s[j] = math.exp(log_scales[g, j])
        for i in range(3):
            for j in range(3):
                M[i, j] = R[i, j] * s[j]
        for i in range(3):
            for j in range(3):
                S[i, j] = M[i, 0] * M[j, 0] + M[i, 1] * M[j, 1] + M[i, 2] * M[j, 2]
        gS[:] = 0.0
        gp[:] = 0.0
        for c in range(C):
            if radii[c, g, 0] <= 0 or radii[c, g, 1] <= 0:
                continue
            K = Ks[c]
            fx, fy = K[0, 0], K[1, 1]
            V = viewmats[c]
            uc, vc, u_free, v_free = camera_terms(V, K, width, height, means[g], t)
            rz = 1.0 / t[2]
            for j in range(3):
                TW[0, j] = fx * rz * V[0, j] - fx * uc * rz * V[2, j]
                TW[1, j] = fy * rz * V[1, j] - fy * vc * rz * V[2, j]
            a = b = d = 0.0
            for i in range(3):
                for j in range(3):
                    a += TW[0, i] * S[i, j] * TW[0, j]
                    b += TW[0, i] * S[i, j] * TW[1, j]
                    d += TW[1, i] * S[i, j] * TW[1, j]
            a += eps2d
            d += eps2d
            det = a * d - b * b
            # conic (A, B, C) = inverse of [[a, b], [b, d]]; G = dL/dQ with the off-diagonal split evenly
            qa, qb, qc = d / det, -b / det, a / det
            ga, gb, gc = v_conics[c, g, 0], 0.5 * v_conics[c, g, 1], v_conics[c, g, 2]
            # H = -Q G Q = dL/d(2D covariance)
            h00 = -(qa * (ga * qa + gb * qb) + qb * (gb * qa + gc * qb))
            h01 = -(qa * (ga * qb + gb * qc) + qb * (gb * qb + gc * qc))
            h11 = -(qb * (ga * qb + gb * qc) + qc * (gb * qb + gc * qc))
            # dL/d(TW) = 2 H TW S ; dL/dS += TW^T H TW
            for j in range(3):
                r0 = TW[0, 0] * S[0, j] + TW[0, 1] * S[1, j] + TW[0, 2] * S[2, j]
                r1 = TW[1, 0] * S[0, j] + TW[1, 1] * S[1, j] + TW[1, 2] * S[2, j]
                gT[0, j] = 2.0 * (h00 * r0 + h01 * r1)
                gT[1, j] = 2.0 * (h01 * r0 + h11 * r1)
            for i in range(3):
                for j in range(3):
                    gS[i, j] += (
                        TW[0, i] * h00 * TW[0, j]
                        + TW[0, i] * h01 * TW[1, j]
                        + TW[1, i] * h01 * TW[0, j]
                        + TW[1, i] * h11 * TW[1, j]
                    )
            # TW = J V: dL/dJ = gT V^T, with J00 = fx/z, J02 = -fx uc/z, J11 = fy/z, J12 = -fy vc/z
            gJ00 = gT[0, 0] * V[0, 0] + gT[0, 1] * V[0, 1] + gT[0, 2] * V[0, 2]
            gJ02 = gT[0, 0] * V[2, 0] + gT[0, 1] * V[2, 1] + gT[0, 2] * V[2, 2]
            gJ11 = gT[1, 0] * V[1, 0] + gT[1, 1] * V[1, 1] + gT[1, 2] * V[1, 2]
            gJ12 = gT[1, 0] * V[2, 0] + gT[1, 1] * V[2, 1] + gT[1, 2] * V[2, 2]
            gt[:] = 0.0
            gt[2] += (-fx * gJ00 + fx * uc * gJ02 - fy * gJ11 + fy * vc * gJ12) * rz * rz
            g_uc = -fx * rz * gJ02
            g_vc = -fy * rz * gJ12
            if u_free:
                gt[0] += g_uc * rz
                gt[2] -= g_uc * t[0] * rz * rz
            if v_free:
                gt[1] += g_vc * rz
                gt[2] -= g_vc * t[1] * rz * rz
            # means2d and depth
            gt[0] += v_m2d[c, g, 0] * fx * rz
            gt[1] += v_m2d[c, g, 1] * fy * rz
            gt[2] -= (v_m2d[c, g, 0] * fx * t[0] + v_m2d[c, g, 1] * fy * t[1]) * rz * rz
            gt[2] += v_colors[c, g, 3]
            for j in range(3):
                gp[j] += V[0, j] * gt[0] + V[1, j] * gt[1] + V[2, j] * gt[2]
            # colour
            dx = means[g, 0] - campos[c, 0]
            dy = means[g, 1] - campos[c, 1]
            dz = means[g, 2] - campos[c, 2]
            dn = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            ux, uy, uz = dx / dn, dy / dn, dz / dn
            sh_basis(degree, ux, uy, uz, basis)
            wb[:] = 0.0
            for ch in range(3):
                v = basis[0] * sh0[g, 0, ch]
                for k in range(1, nb):
                    v += basis[k] * shN[g, k - 1, ch]
                if v + 0.5 < 0.0:
                    continue  # clamped at 0: no gradient
                gc_ = v_colors[c, g, ch]
                g_sh0[g, 0, ch] += basis[0] * gc_
                for k in range(1, nb):
                    g_shN[g, k - 1, ch] += basis[k] * gc_
                    wb[k] += (shN[g, k - 1, ch]) * gc_
            if degree > 0:
                gux, guy, guz = sh_basis_grad(degree, ux, uy, uz, wb)
                dot = gux * ux + guy * uy + guz * uz
                gp[0] += (gux - dot * ux) / dn
                gp[1] += (guy - dot * uy) / dn
                gp[2] += (guz - dot * uz) / dn
        for j in range(3):
            g_means[g, j] += gp[j]
        # S = M M^T -> dL/dM = (gS + gS^T) M ; M = R diag(s)
        for i in range(3):
            for j in range(3):
                gM[i, j] = (
                    (gS[i, 0] + gS[0, i]) * M[0, j]
                    + (gS[i, 1] + gS[1, i]) * M[1, j]
                    + (gS[i, 2] + gS[2, i]) * M[2, j]
                )
        for j in range(3):
            gs = gM[0, j] * R[0, j] + gM[1, j] * R[1, j] + gM[2, j] * R[2, j]
            g_log_scales[g, j] += gs * s[j]
        gR00, gR01, gR02 = gM[0, 0] * s[0], gM[0, 1] * s[1], gM[0, 2] * s[2]
        gR10, gR11, gR12 = gM[1, 0] * s[0], gM[1, 1] * s[1], gM[1, 2] * s[2]
        gR20, gR21, gR22 = gM[2, 0] * s[0], gM[2, 1] * s[1], gM[2, 2] * s[2]
        gw = 2.0 * (-z * gR01 + y * gR02 + z * gR10 - x * gR12 - y * gR20 + x * gR21)
        gx = 2.0 * (
            y * gR01 + z * gR02 + y * gR10 - 2.0 * x * gR11 - w * gR12 + z * gR20 + w * gR21 - 2.0 * x * gR22
        )
        gy = 2.0 * (
            -2.0 * y * gR00 + x * gR01 + w * gR02 + x * gR10 + z * gR12 - w * gR20 + z * gR21 - 2.0 * y * gR22
        )
        gz = 2.0 * (
            -2.0 * z * gR00 - w * gR01 + x * gR02 + w * gR10 - 2.0 * z * gR11 + y * gR12 + x * gR20 + y * gR21
        )
        dot = gw * w + gx * x + gy * y + gz * z  # through the normalisation q / |q|
        g_quats[g, 0] += (gw - dot * w) / qn
        g_quats[g, 1] += (gx - dot * x) / qn
        g_quats[g, 2] += (gy - dot * y) / qn
        g_quats[g, 3] += (gz - dot * z) / qn

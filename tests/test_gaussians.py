"""Gaussians: seeding from points, and extend/prune keeping optimiser state aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splat.gaussians import PARAM_KEYS, Gaussians, num_sh_rest


def test_seeding_sizes_follow_neighbour_spacing():
    # A regular grid with spacing 0.1: the mean distance to the 3 nearest neighbours is 0.1.
    xs, ys = np.meshgrid(np.arange(10) * 0.1, np.arange(10) * 0.1)
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(100, 2.0)], -1)
    g = Gaussians.from_points(pts, np.full((100, 3), 0.25), sh_degree=2)
    assert len(g) == 100 and g.sh_degree == 2 and g.params["shN"].shape == (100, num_sh_rest(2), 3)
    inner = g.scales_linear()[45]
    torch.testing.assert_close(inner, torch.full((3,), 0.1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g.rgb(), torch.full((100, 3), 0.25), atol=1e-6, rtol=0)
    torch.testing.assert_close(g.quats_normalised()[:, 0], torch.ones(100))


def test_extend_and_prune_keep_optimiser_state_consistent():
    rng = np.random.default_rng(1)
    g = Gaussians.from_points(rng.normal(size=(20, 3)), rng.uniform(size=(20, 3)))
    opts = {k: torch.optim.Adam([g.params[k]], lr=1e-2) for k in PARAM_KEYS}
    loss = sum((p**2).sum() for p in g.params.values())
    loss.backward()
    for o in opts.values():
        o.step()
    exp_avg_before = opts["means"].state[g.params["means"]]["exp_avg"].clone()
    g.extend(Gaussians.from_points(rng.normal(size=(5, 3)), rng.uniform(size=(5, 3))), opts)
    assert len(g) == 25
    for key in PARAM_KEYS:
        p = g.params[key]
        assert opts[key].param_groups[0]["params"][0] is p
        state = opts[key].state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    torch.testing.assert_close(opts["means"].state[g.params["means"]]["exp_avg"][:20], exp_avg_before)
    assert opts["means"].state[g.params["means"]]["exp_avg"][20:].abs().sum() == 0
    keep = torch.zeros(25, dtype=torch.bool)
    keep[::2] = True
    g.prune(keep, opts)
    assert len(g) == 13
    for key in PARAM_KEYS:
        p = g.params[key]
        assert opts[key].state[p]["exp_avg"].shape == p.shape
    torch.testing.assert_close(opts["means"].state[g.params["means"]]["exp_avg"][:10], exp_avg_before[::2])
    # The optimiser still steps the new tensors.
    before = g.params["means"].detach().clone()
    (g.params["means"] ** 2).sum().backward()
    opts["means"].step()
    assert not torch.equal(before, g.params["means"].detach())


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        Gaussians(
            {
                "means": torch.zeros(3, 3),
                "scales": torch.zeros(3, 2),
                "quats": torch.zeros(3, 4),
                "opacities": torch.zeros(3),
                "sh0": torch.zeros(3, 1, 3),
                "shN": torch.zeros(3, 0, 3),
            }
        )
    with pytest.raises(ValueError, match="SH degree"):
        Gaussians.empty(sh_degree=4)

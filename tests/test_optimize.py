"""Optimisation: strategies keep parameters and Adam state aligned, tiny scenes converge, resume is exact,
pose refinement, depth supervision and regularisers do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.trajectory import yaw_cameras
from splat.densify_ops import clone, remove, split
from splat.errors import StitchError
from splat.gaussians import PARAM_KEYS, Gaussians
from splat.learning_rates import LearningRates, Schedule, make_optimizers
from splat.losses import psnr
from splat.optimize import Trainer, optimize
from splat.regularize import Regularization, scale_ratio_penalty
from splat.render import render, render_camera
from splat.strategy import BudgetStrategy, make_strategy
from splat.train_views import TrainView
from splat.view_culling import GaussianSubset, reaching_view

W, H = 32, 24


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a loaded 2-core machine two threads make small ops ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = LearningRates(sh0=0.02, opacities=0.05, scales=0.01)


def _plane(n_x: int, n_y: int, z: float = 3.0, seed: int = 0, grey: bool = False, degree: int = 1):
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, n_x), np.linspace(-0.9, 0.9, n_y))
    pts = np.stack([u.ravel(), v.ravel(), np.full(u.size, z)], 1)
    pts += np.random.default_rng(seed).normal(0, 0.01, pts.shape)
    if grey:
        cols = np.full((u.size, 3), 0.5)
    else:
        cols = np.stack(
            [0.5 + 0.5 * np.sin(4 * u.ravel()), 0.5 + 0.5 * np.cos(5 * v.ravel()), u.ravel() > 0], 1
        )
    return Gaussians.from_points(pts, cols.astype(float), sh_degree=degree)


@pytest.fixture(scope="module")
def target_views():
    gt = _plane(48, 36)
    cams = yaw_cameras([0.0, 10.0, -10.0], W, H)
    with torch.no_grad():
        return [TrainView(c, render_camera(gt, c).rgb[0]) for c in cams]


def _score(g: Gaussians, views) -> float:
    with torch.no_grad():
        return float(np.mean([psnr(render_camera(g, v.camera).rgb[0].clamp(0, 1), v.image) for v in views]))


def _with_adam_state(g: Gaussians):
    opts = make_optimizers(g, LearningRates(), 1.0)
    for key in PARAM_KEYS:
        g.params[key].grad = torch.randn_like(g.params[key])
    for opt in opts.values():
        opt.step()
    return opts


def _assert_aligned(g: Gaussians, opts, state: dict) -> None:
    n = len(g)
    for key in PARAM_KEYS:
        param = g.params[key]
        assert param.shape[0] == n, key
        assert opts[key].param_groups[0]["params"][0] is param, f"optimiser {key} lost its parameter"
        moments = opts[key].state[param]
        assert moments["exp_avg"].shape == param.shape and moments["exp_avg_sq"].shape == param.shape, key
    for name in ("grad2d", "count", "radii"):
        if state.get(name) is not None:
            assert state[name].shape == (n,), name


def test_grow_and_prune_keep_parameters_moments_and_statistics_aligned():
    g = _plane(6, 5, degree=2)
    opts = _with_adam_state(g)
    strategy = BudgetStrategy(budget=45, grow_grad2d=0.1, grow_scale3d=0.05)
    state = strategy.initialize_state(scene_scale=1.0)
    n = len(g)
    state["grad2d"] = torch.linspace(0, 1, n)  # top half above the threshold
    state["count"] = torch.ones(n)
    state["radii"] = torch.zeros(n)
    with torch.no_grad():
        g.params["scales"][: n // 2] = np.log(0.2)  # large: split
        g.params["scales"][n // 2 :] = np.log(0.01)  # small: clone
        g.params["opacities"][:3] = -10.0  # transparent: pruned
    before = {k: opts[k].state[g.params[k]]["exp_avg"].clone() for k in PARAM_KEYS}
    before_means = g.params["means"].detach().clone()
    assert strategy.prune(g.params, opts, state) == 3
    _assert_aligned(g, opts, state)
    assert torch.equal(opts["means"].state[g.params["means"]]["exp_avg"], before["means"][3:])
    assert torch.equal(g.params["means"].detach(), before_means[3:])
    grown = strategy.grow(g.params, opts, state)
    _assert_aligned(g, opts, state)
    assert grown > 0 and len(g) <= 45, "growth must stop at the budget"
    assert len(g) == 45  # more candidates than room: the budget is filled
    # New rows start with zero moments and statistics.
    tail = opts["sh0"].state[g.params["sh0"]]["exp_avg"][-grown:]
    assert torch.count_nonzero(tail) == 0 and torch.count_nonzero(state["count"][-grown:]) == 0


def test_ops_clone_split_remove_shapes_and_values():
    g = _plane(4, 3)
    opts = _with_adam_state(g)
    state = {"grad2d": torch.arange(12.0), "scene_scale": 1.0}
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[1, 5]] = True
    means = g.params["means"].detach().clone()
    assert clone(g.params, opts, state, mask) == 2
    assert torch.equal(g.params["means"][-2:].detach(), means[[1, 5]]) and len(g) == 14
    assert torch.equal(state["grad2d"][:12], torch.arange(12.0)) and state["grad2d"][-2:].eq(0).all()
    mask = torch.zeros(14, dtype=torch.bool)
    mask[0] = True
    log_s = g.params["scales"][0].detach().clone()
    assert split(g.params, opts, state, mask, torch.Generator().manual_seed(0)) == 1
    assert len(g) == 15
    assert torch.allclose(g.params["scales"][-2:].detach(), (log_s - np.log(1.6)).expand(2, 3))
    _assert_aligned(g, opts, state)
    assert remove(g.params, opts, state, torch.ones(15, dtype=torch.bool).logical_not()) == 0
    _assert_aligned(g, opts, state)


def test_tiny_scene_converges_to_its_target(target_views):
    g = _plane(16, 12, grey=True)
    start = _score(g, target_views)
    losses = optimize(g, target_views, 150, lrs=FAST, seed=0)
    end = _score(g, target_views)
    assert start < 12.0 and end > 24.0, (start, end)
    assert np.mean(losses[-10:]) < 0.25 * np.mean(losses[:10])


def test_tiny_scene_with_densification_converges_within_budget(target_views):
    g = _plane(16, 12, grey=True)
    strategy = BudgetStrategy(budget=260, grow_grad2d=0.001, refine_start_iter=20, refine_stop_iter=120,
                              refine_every=20)  # fmt: skip
    trainer = Trainer(g, target_views, 150, lrs=FAST, strategy=strategy, schedule=Schedule(0.1, 50))
    trainer.run(150)
    assert trainer.strategy_state["n_grown"] > 0 and 192 < len(g) <= 260
    assert _score(g, target_views) > 24.0
    _assert_aligned(g, trainer.optimizers, trainer.strategy_state)


def _trainer(g, views, **kw):
    strategy = BudgetStrategy(budget=230, grow_grad2d=0.001, refine_start_iter=4, refine_stop_iter=18,
                              refine_every=4, seed=3)  # fmt: skip
    return Trainer(g, views, 20, lrs=FAST, seed=7, strategy=strategy, schedule=Schedule(0.1, 5), **kw)


def test_same_seed_same_result_and_resume_is_exact(target_views):
    a = _plane(16, 12, grey=True)
    ta = _trainer(a, target_views, pose_refine=True)
    ta.run(20)
    b = _plane(16, 12, grey=True)
    tb = _trainer(b, target_views, pose_refine=True)
    tb.run(11)
    tensors, meta = tb.state_dict()
    c = _plane(16, 12, grey=True)  # a new process: fresh scene, then the saved state
    tc = _trainer(c, target_views, pose_refine=True)
    tc.load_state_dict(tensors, meta)
    tc.run(9)
    assert ta.strategy_state["n_grown"] > 0
    for key in PARAM_KEYS:
        assert torch.equal(a.params[key], c.params[key]), key
    assert torch.equal(ta.poses.delta, tc.poses.delta)
    _assert_aligned(c, tc.optimizers, tc.strategy_state)


def test_culled_render_equals_full_render():
    g = _plane(20, 15)
    with torch.no_grad():
        g.params["means"][:40, 0] += 3.0  # some far outside the view
    cam = yaw_cameras([5.0], W, H)[0]
    viewmat = torch.as_tensor(cam.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(cam.K, dtype=torch.float32)
    ids = reaching_view(viewmat, K, W, H, g.means.detach(), g.params["scales"].detach())
    assert 0 < len(ids) < len(g)
    with torch.no_grad():
        full = render(g, viewmat[None], K[None], W, H).rgb
        part = render(GaussianSubset(g, ids, g.sh_degree), viewmat[None], K[None], W, H).rgb
    assert torch.allclose(full, part, atol=1e-5)
    # A view that sees none of the Gaussians still gives a finite loss (the black image against the target).
    away = TrainView(yaw_cameras([180.0], W, H)[0], torch.full((H, W, 3), 0.5))
    assert Trainer(g, [away], 1).run(1)[0] == pytest.approx(0.8 * 0.5 + 0.2 * (1 - 0.0), abs=0.05)


def test_pose_refinement_moves_a_misplaced_camera_towards_the_truth():
    g = _plane(48, 36)
    true_cam = yaw_cameras([1.5], W, H)[0]
    with torch.no_grad():
        target = render_camera(g, true_cam).rgb[0]
    view = TrainView(yaw_cameras([0.0], W, H)[0], target)
    lrs = LearningRates(means=0, scales=0, quats=0, opacities=0, sh0=0, shN=0, pose=2e-3)
    trainer = Trainer(g, [view], 60, lrs=lrs, ssim_weight=0.0, pose_refine=True, pose_anchor=None)
    losses = trainer.run(60)
    yaw = float(trainer.poses.delta.detach()[0, 1])  # rotation about y of the world-to-camera correction
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert np.rad2deg(-yaw) == pytest.approx(1.5, abs=0.5)


def test_depth_supervision_pulls_geometry_to_the_completed_depth():
    g = _plane(24, 18, z=3.0)
    cam = yaw_cameras([0.0], W, H)[0]
    with torch.no_grad():
        image = render_camera(g, cam).rgb[0]
    view = TrainView(cam, image, depth=torch.full((H, W), 3.3))
    lrs = LearningRates(means=3e-3)
    optimize(g, [view], 60, lrs=lrs, regularization=Regularization(depth_weight=1.0))
    z = float(g.means.detach()[:, 2].median())
    assert z > 3.1, z
    g2 = _plane(24, 18, z=3.0)
    optimize(g2, [view], 60, lrs=lrs)  # without depth supervision nothing pulls it
    assert abs(float(g2.means.detach()[:, 2].median()) - 3.0) < 0.05


def test_scale_ratio_regulariser_shortens_needles(target_views):
    iso = torch.log(torch.full((4, 3), 0.1))
    needle = torch.log(torch.tensor([[1.0, 0.01, 0.01]]))
    assert float(scale_ratio_penalty(iso)) == 0.0 and float(scale_ratio_penalty(needle)) > 50
    g = _plane(16, 12)
    with torch.no_grad():
        g.params["scales"][:, 0] += np.log(30.0)
    reg = Regularization(scale_ratio_weight=0.01, max_scale_ratio=5.0)
    optimize(g, target_views, 40, lrs=FAST, regularization=reg)
    s = g.scales_linear().detach()
    ratio = (s.max(-1).values / s.min(-1).values).median()
    assert float(ratio) < 20.0


def test_strategy_choices_are_checked():
    with pytest.raises(StitchError, match="CUDA"):
        make_strategy("mcmc", device="cpu", steps=100)
    with pytest.raises(StitchError, match="unknown strategy"):
        make_strategy("fancy", device="cpu", steps=100)
    s = make_strategy("cpu", device="cpu", steps=1000, n_initial=1000)
    assert s.budget == 1250 and s.refine_stop_iter == 800
    g = _plane(4, 3)
    with pytest.raises(StitchError, match="trainable"):
        Trainer(g, [TrainView(yaw_cameras([0.0], W, H)[0], torch.zeros(H, W, 3))], 5,
                trainable=torch.ones(12, dtype=torch.bool), strategy=s)  # fmt: skip

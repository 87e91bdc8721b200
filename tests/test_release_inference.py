"""The completion network's inference wrapper matches the Invisible Stitch release (issue 16, items 1-2).

The network itself is replaced by stand-ins whose output is known, so each test pins one choice of the
wrapper with numbers computed here: no depth cap, NaN/Inf is an error, the input resize is bilinear with
align_corners=True, the output is upsampled bicubically.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from completion.network.model import DepthCompletionModel
from engine.backends.depth_network import NetworkDepthCompleter, NetworkDepthConfig
from splat.errors import StitchError


class _ConstantZoe(nn.Module):
    """Stand-in ZoeDepth: a constant depth map at the network size."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.anchor = nn.Parameter(torch.zeros(1))  # the wrapper reads device/dtype from a parameter

    def forward(self, pixel_values):
        b, _, h, w = pixel_values.shape
        return SimpleNamespace(predicted_depth=torch.full((b, h, w), self.value, dtype=pixel_values.dtype))


class _RecordingZoe(nn.Module):
    """Stand-in ZoeDepth: remembers its input, returns a fixed map (or the input's red channel)."""

    def __init__(self, out: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out = out
        self.anchor = nn.Parameter(torch.zeros(1))
        self.seen: torch.Tensor | None = None

    def forward(self, pixel_values):
        self.seen = pixel_values.detach().clone()
        b = pixel_values.shape[0]
        out = pixel_values[:, 0] if self.out is None else self.out.expand(b, -1, -1)
        return SimpleNamespace(predicted_depth=out)


def _model(zoe: nn.Module, net_size) -> DepthCompletionModel:
    model = DepthCompletionModel.tiny(seed=0, net_size=net_size)
    model.zoe = zoe
    return model


def _completer(model, **cfg) -> NetworkDepthCompleter:
    return NetworkDepthCompleter(model, NetworkDepthConfig(pad=False, flip_average=False, **cfg))


def _inputs(h=24, w=32, known=True):
    rgb = np.full((h, w, 3), 0.5, np.float32)
    mask = np.zeros((h, w), bool)
    if known:
        mask[:, : w // 2] = True
    return rgb, np.where(mask, 3.0, 0.0).astype(np.float32), mask


def test_generated_views_are_not_capped_at_five_metres():
    # The network says 14 m (the release's unnormed attractor output has no upper bound); a generated view
    # (depth scaling 0.5) must come out at 7 m. The old clamp to [1e-3, 10] before scaling gave 5.0 m.
    completer = _completer(_model(_ConstantZoe(14.0), (16, 16)))
    out = completer(*_inputs())
    np.testing.assert_allclose(out, 7.0, rtol=1e-6)
    # The first view (nothing known, scaling 1) keeps the full 14 m (old: 10 m).
    np.testing.assert_allclose(completer(*_inputs(known=False)), 14.0, rtol=1e-6)


def test_only_a_positivity_floor_remains():
    completer = _completer(_model(_ConstantZoe(-2.0), (16, 16)))
    out = completer(*_inputs(known=False))
    assert out.min() == pytest.approx(1e-3)  # min_depth floor, never zero or negative


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_from_the_network_is_a_loud_error_not_one_millimetre(bad):
    completer = _completer(_model(_ConstantZoe(bad), (16, 16)))
    with pytest.raises(StitchError, match="NaN/Inf at 384 of 384 pixels"):
        completer(*_inputs(h=16, w=24))


def test_input_resize_is_bilinear_with_align_corners_true():
    zoe = _RecordingZoe()
    model = _model(zoe, (1, 7))
    x = torch.zeros(1, 5, 1, 4)
    x[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # a ramp across 4 pixels, resized to 7
    model.forward_normalized(x, (1, 7))
    # align_corners=True (ZoeDepth's MiDaS wrapper): 0, 0.5, ..., 3 exactly.
    # align_corners=False would give 0, 0.357, 0.929, 1.5, 2.071, 2.643, 3.
    torch.testing.assert_close(zoe.seen[0, 0, 0], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))


def test_output_upsampling_is_bicubic():
    # A 1 m -> 2 m step at the network's 4 px width, upsampled to 8 px. Bicubic (the release) under- and
    # overshoots beside the step; bilinear would give 1, 1, 1, 1.25, 1.75, 2, 2, 2.
    step = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]])
    model = _model(_RecordingZoe(step), (2, 4))
    out = model.forward_normalized(torch.zeros(1, 5, 2, 4), (2, 8))[0, 0, 0]
    expected = torch.tensor([1.0, 0.9648, 0.8945, 1.2266, 1.7734, 2.1055, 2.0352, 2.0])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)

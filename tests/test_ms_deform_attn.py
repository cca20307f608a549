"""MSDeformAttn (grid_sample formulation) against an explicit per-point bilinear loop."""

from __future__ import annotations

import math

import pytest
import torch

from daq_model.ms_deform_attn import MSDeformAttn, ms_deform_attn_sample


def _bilinear_zero_padded(feature: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``feature`` (D, H, W) at normalised (x, y) with align_corners=False semantics:
    pixel centres at (i + 0.5) / size; the four neighbours outside the map read zero."""
    d, h, w = feature.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=torch.float64)
    for xi, wx in ((x0, x0 + 1 - px), (x0 + 1, px - x0)):
        for yi, wy in ((y0, y0 + 1 - py), (y0 + 1, py - y0)):
            if 0 <= xi < w and 0 <= yi < h:
                out += wx * wy * feature[:, yi, xi].double()
    return out


def _naive(value, shapes, locations, weights):
    n, _, heads, dim = value.shape
    _, lq, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, heads * dim, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=torch.float64)
                for lvl, (h, w) in enumerate(shapes):
                    fmap = value[b, starts[lvl]:starts[lvl + 1], m].T.reshape(dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        acc += weights[b, q, m, lvl, p].item() * _bilinear_zero_padded(fmap, x, y)
                out[b, q, m * dim:(m + 1) * dim] = acc
    return out


@pytest.mark.parametrize("shapes, heads, points", [
    ([(5, 7), (3, 4), (2, 2)], 2, 3),
    ([(6, 3)], 4, 2),
    ([(4, 4), (1, 3)], 1, 4),
])
def test_sampling_equals_naive_loop(shapes, heads, points):
    gen = torch.Generator().manual_seed(len(shapes) * 10 + heads)
    n, lq, dim = 2, 5, 3
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(n, tokens, heads, dim, generator=gen)
    # locations from -0.4 to 1.4: many points outside the map, some straddling its border
    locations = torch.rand(n, lq, heads, len(shapes), points, 2, generator=gen) * 1.8 - 0.4
    locations[0, 0, 0, 0, 0] = torch.tensor([1.3, -0.2])  # fully outside
    locations[0, 1, 0, 0, 0] = torch.tensor([0.0, 1.0])  # on the outer corner
    weights = torch.rand(n, lq, heads, len(shapes), points, generator=gen)
    weights = weights / weights.flatten(3).sum(-1)[..., None, None]
    fast = ms_deform_attn_sample(value, shapes, locations, weights)
    slow = _naive(value, shapes, locations, weights)
    assert fast.shape == (n, lq, heads * dim)
    torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=1e-5)


def test_module_offsets_are_in_pixels_of_each_level():
    torch.manual_seed(0)
    shapes = [(4, 6), (2, 3)]
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.3)
        attn.attention_weights.weight.normal_(0, 0.3)
    tokens = sum(h * w for h, w in shapes)
    query = torch.randn(1, 3, 8)
    inp = torch.randn(1, tokens, 8)
    ref = torch.rand(1, 3, 2, 2)
    out = attn(query, ref, inp, shapes)
    # recompute by hand: locations = ref + offset / (W_l, H_l)
    value = attn.value_proj(inp).view(1, tokens, 2, 4)
    offsets = attn.sampling_offsets(query).view(1, 3, 2, 2, 2, 2)
    weights = attn.attention_weights(query).view(1, 3, 2, 4).softmax(-1).view(1, 3, 2, 2, 2)
    norm = torch.tensor([[6.0, 4.0], [3.0, 2.0]])
    locations = ref[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
    expected = attn.output_proj(_naive(value, shapes, locations, weights).float())
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_official_initialisation():
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).requires_grad_(False)
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # head h points along angle 2*pi*h/4, scaled so the larger |component| is 1, point k at k+1
    torch.testing.assert_close(bias[:, 0, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[:, :, 1], 2 * bias[:, :, 0])
    torch.testing.assert_close(bias[:, 2], bias[:, 0])
    assert float(attn.sampling_offsets.weight.abs().max()) == 0.0
    assert float(attn.attention_weights.weight.abs().max()) == 0.0
    assert float(attn.attention_weights.bias.abs().max()) == 0.0
    assert float(attn.value_proj.bias.abs().max()) == 0.0


def test_gradients_flow_to_offsets_and_values():
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    inp = torch.randn(1, 12, 8, requires_grad=True)
    out = attn(torch.randn(1, 4, 8), torch.rand(1, 4, 1, 2), inp, [(3, 4)])
    out.square().sum().backward()
    assert inp.grad is not None and float(inp.grad.abs().sum()) > 0
    assert float(attn.sampling_offsets.weight.grad.abs().sum()) > 0

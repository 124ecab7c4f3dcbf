"""Plain-PyTorch definitions of every fastcnn op. They document the math, and the tests
compare the kernels against them (forward directly, gradients through autograd)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._shapes import pool_out_size


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[-1])


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """Convolution as im2col + a grouped matrix product:
    ``out[n, k, p] = sum_(c,r,s) W[k, c, r, s] * X_padded[n, c, oh*sh + r*dh, ow*sw + s*dw]``."""
    stride, dilation = _pair(stride), _pair(dilation)
    k, cg, r, s = weight.shape
    if padding == "valid":
        padding = 0
    if padding == "same":
        total = [d * (kk - 1) for d, kk in zip(dilation, (r, s))]
        pads = (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
    else:
        ph, pw = _pair(padding)
        pads = (pw, pw, ph, ph)
    x = F.pad(input, pads)
    n, c, h, w = x.shape
    ho = (h - dilation[0] * (r - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (s - 1) - 1) // stride[1] + 1
    cols = F.unfold(x, (r, s), dilation=dilation, stride=stride)  # [N, C*R*S, Ho*Wo]
    cols = cols.view(n, groups, cg * r * s, ho * wo)
    wmat = weight.reshape(groups, k // groups, cg * r * s)
    out = torch.einsum("gkj,ngjl->ngkl", wmat, cols).reshape(n, k, ho, wo)
    if bias is not None:
        out = out + bias.view(1, k, 1, 1)
    return relu(out) if activation == "relu" else out


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max over each window of the -inf padded input, scanning window offsets in order:
    a later element replaces the running max when it is larger or NaN (torch's rule).
    Indices are flat ``h * W + w`` positions in the unpadded plane."""
    (kh, kw), (dh, dw), (ph, pw) = _pair(kernel_size), _pair(dilation), _pair(padding)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    n, c, h, w = input.shape
    ho = pool_out_size(h, kh, sh, ph, dh, ceil_mode)
    wo = pool_out_size(w, kw, sw, pw, dw, ceil_mode)
    # Pad far enough on the bottom/right for every window the output size admits.
    extra_h = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
    x = F.pad(input, (pw, pw + extra_w, ph, ph + extra_h), value=-math.inf)
    rows = torch.arange(x.shape[2]) - ph
    cols = torch.arange(x.shape[3]) - pw
    flat = (rows[:, None] * w + cols[None, :]).expand(n, c, -1, -1)
    valid = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols[None, :] >= 0) & (cols[None, :] < w)
    valid = valid.expand(n, c, -1, -1)
    best = idx = seen = None
    for i in range(kh):
        for j in range(kw):
            win = (
                slice(None),
                slice(None),
                slice(i * dh, i * dh + (ho - 1) * sh + 1, sh),
                slice(j * dw, j * dw + (wo - 1) * sw + 1, sw),
            )
            v, p, ok = x[win], flat[win], valid[win]
            if best is None:
                best, idx, seen = v.clone(), torch.where(ok, p, -1), ok.clone()
                best = torch.where(ok, v, torch.full_like(v, -math.inf))
                continue
            take = ok & (~seen | (v > best) | torch.isnan(v))
            best = torch.where(take, v, best)
            idx = torch.where(take, p, idx)
            seen = seen | ok
    return (best, idx) if return_indices else best


def max_pool2d_backward(grad_output: Tensor, input: Tensor, indices: Tensor) -> Tensor:
    """Each output's gradient is added at its argmax."""
    n, c, h, w = input.shape
    grad = torch.zeros(n, c, h * w, dtype=grad_output.dtype)
    idx = indices.flatten(2)
    keep = idx >= 0
    grad.scatter_add_(2, idx.clamp(min=0), torch.where(keep, grad_output.flatten(2), 0))
    return grad.view(n, c, h, w)


def global_avg_pool2d(input: Tensor, keepdim: bool = False) -> Tensor:
    return input.mean(dim=(2, 3), keepdim=keepdim)


def relu(input: Tensor) -> Tensor:
    """``max(x, 0)``; NaN stays NaN."""
    return torch.where(input < 0, torch.zeros_like(input), input)


def relu_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    """The gradient passes where the output is positive (or NaN)."""
    return torch.where(output <= 0, torch.zeros_like(grad_output), grad_output)


def guided_relu_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    """``grad * (grad > 0) * (input > 0)``: ReLU's backward, then only positive gradients."""
    return relu_backward(grad_output, output).clamp(min=0)

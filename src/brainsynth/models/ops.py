"""Autograd functions with cheap derivatives of every order, for the PGGAN's layers.

They compute the same values as the stock PyTorch ops, with fewer and faster kernels on a
CPU (benchmarks/README.md has the figures); :mod:`brainsynth.models.pggan` builds its layers
from them.

- :func:`conv2d` (all equalised 3x3/1x1 convolutions). PyTorch's double backward of a
  convolution, which the WGAN-GP gradient penalty runs through every D layer, computes the
  weight term as a convolution with the BATCH as channels and the whole image as a kernel
  (plus two transposed copies); oneDNN runs that at a fraction of its speed. Here every
  derivative of every order is one of the three fast oneDNN kernels (forward,
  backward-data, backward-weights), and the weight gradient is skipped when the running
  backward does not reach the weights (the penalty's ``autograd.grad`` with respect to the
  images).
- :func:`leaky_relu` (in place) and :func:`avg_pool2x2`: their double backward returns
  nothing for the activation (the second derivative is 0 almost everywhere; the pool is
  linear) instead of a full-size tensor of zeros, which PyTorch then adds to the gradient
  (and, for the pool, in NCHW next to channels-last tensors).
- :func:`pixel_norm`: one fp32-accumulating reduction and one multiply forward,
  ``s * (g - y * mean_c(g * y))`` backward, instead of about a dozen elementwise kernels.

Under ``torch.compile`` each falls back to the plain expression, which the compiler fuses itself;
so it does under torch.func transforms (the per-sample gradients of :mod:`brainsynth.train.dp`),
which cannot run these functions' ``ctx``-style backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

LRELU_SLOPE = 0.2
PIXELNORM_EPS = 1e-8


def _plain() -> bool:
    """Use the stock ops: inside torch.compile (it fuses them) or a torch.func transform (vmap, grad)."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


class _PixelNorm(torch.autograd.Function):
    """``y = x * s``, ``s = rsqrt(mean_c(x^2) + eps)``; ``dx = s * (g - y * mean_c(g * y))``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        # One pass over x, accumulated in fp32 whatever x's dtype (no fp32 copy of x).
        acc = torch.promote_types(x.dtype, torch.float32)
        sq = torch.linalg.vector_norm(x, 2, dim=1, keepdim=True, dtype=acc)  # [N, 1, (H, W)]
        scale = torch.rsqrt(sq.square_().div_(x.shape[1]).add_(eps))
        y = x * scale.to(x.dtype)
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        y, scale = ctx.saved_tensors
        proj = (grad * y).sum(dim=1, keepdim=True, dtype=scale.dtype).div_(y.shape[1])  # [N, 1, (H, W)]
        gx = torch.addcmul(grad, y, proj.to(y.dtype), value=-1.0)
        return gx.mul_(scale.to(y.dtype)), None


def pixel_norm(x: torch.Tensor, eps: float = PIXELNORM_EPS) -> torch.Tensor:
    """``x * rsqrt(mean(x**2 over channels) + eps)``; statistics in fp32 (see module notes).

    Differentiable once (the generator needs no more); under ``torch.compile`` the plain
    expression, which the compiler fuses itself.

    Parameters
    ----------
    x : Tensor
        ``[N, C]`` or ``[N, C, H, W]``; normalised over dimension 1.
    """
    if _plain():
        scale = torch.rsqrt(x.float().square().mean(dim=1, keepdim=True) + eps)  # [N, 1, (H, W)]
        return x * scale.to(x.dtype)
    return _PixelNorm.apply(x, eps)


# --- convolution and activation with cheap derivatives of every order -----------------------
#
# Three functions close under differentiation: conv(x, w) -> y, its input gradient
# gi(g, w) = dL/dx and its weight gradient gw(x, g) = dL/dw. Differentiating any one gives
# the others again (d gi/dg = conv, d gi/dw = gw, d gw/dx = gi, d gw/dg = conv), and each
# is one oneDNN call of aten.convolution_backward or F.conv2d. Stride 1, "same" padding.

_conv_backward = torch.ops.aten.convolution_backward.default


def _reached(ctx, index: int) -> bool:
    """Whether the running backward pass reaches the ``index``-th input of this node.

    False during ``autograd.grad(score, images)`` for the weights, which then need no
    gradient (what PyTorch's own convolution backward skips too). When it cannot be told,
    True: computing an unused gradient is safe.
    """
    node = ctx.next_functions[index][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # leaf weights under autograd.grad: not supported, assume needed
        return True


def nhwc_strided(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.stride(1) == 1


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """``x`` with channels-last strides, also when it has one channel.

    With one channel both layouts are "contiguous", so ``x.contiguous(memory_format=...)``
    keeps x as it is; but oneDNN picks a convolution's layout from the strides, and a
    1-channel image with NCHW strides would run the whole first layer, and everything
    after it, in NCHW next to channels-last weights (and the mixed-layout elementwise
    kernels are ~30x slower than same-layout ones).
    """
    return x if nhwc_strided(x) else x.clone(memory_format=torch.channels_last)


def _conv_grads(g, x, w, padding, need_x, need_w, need_b):
    return _conv_backward(g, x, w, [w.shape[0]] if need_b else None, [1, 1], [padding, padding], [1, 1], False,
                          [0, 0], 1, [need_x, need_w, need_b])


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, padding):
        ctx.save_for_backward(x, w)
        ctx.padding = padding
        return F.conv2d(x, w, b, padding=padding)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        p = ctx.padding
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_w = need_w and _reached(ctx, 1)
        need_b = need_b and _reached(ctx, 2)
        if not torch.is_grad_enabled():  # plain backward: one oneDNN call, as PyTorch's own
            gx, gw, gb = _conv_grads(g, x, w, p, need_x, need_w, need_b)
            return gx, gw, gb, None
        gx = _ConvGradInput.apply(g, w, x, p) if need_x else None  # create_graph: each part differentiable
        gw = _ConvGradWeight.apply(x, g, w, p) if need_w else None
        gb = g.sum(dim=(0, 2, 3)) if need_b else None
        return gx, gw, gb, None


class _ConvGradInput(torch.autograd.Function):
    """``dL/dx`` of ``conv(x, w)`` given ``g = dL/dy``; ``x`` gives the shape only."""

    @staticmethod
    def forward(ctx, g, w, x, padding):
        ctx.save_for_backward(g, w)
        ctx.padding = padding
        ctx.nhwc = nhwc_strided(x)
        return _conv_grads(g, x, w, padding, True, False, False)[0]

    @staticmethod
    def backward(ctx, gg):
        g, w = ctx.saved_tensors
        p = ctx.padding
        if ctx.nhwc:  # keep the layout of x, also when gg has ONE channel (see nhwc_strided)
            gg = to_nhwc(gg)
        dg = conv2d(gg, w, None, p) if ctx.needs_input_grad[0] else None
        dw = _ConvGradWeight.apply(gg, g, w, p) if ctx.needs_input_grad[1] and _reached(ctx, 1) else None
        return dg, dw, None, None


class _ConvGradWeight(torch.autograd.Function):
    """``dL/dw`` of ``conv(x, w)`` given ``g = dL/dy``; ``w`` gives the shape only."""

    @staticmethod
    def forward(ctx, x, g, w, padding):
        ctx.save_for_backward(x, g)
        ctx.padding = padding
        return _conv_grads(g, x, w, padding, False, True, False)[1]

    @staticmethod
    def backward(ctx, gg):
        x, g = ctx.saved_tensors
        p = ctx.padding
        dx = _ConvGradInput.apply(g, gg, x, p) if ctx.needs_input_grad[0] and _reached(ctx, 0) else None
        dg = conv2d(x, gg, None, p) if ctx.needs_input_grad[1] else None
        return dx, dg, None, None


def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: int) -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=padding)`` (stride 1) with fast derivatives of every order.

    Under CPU/CUDA autocast the operands are cast to the autocast dtype first, as
    ``F.conv2d`` would, so the saved tensors and every derivative share that dtype.
    Under ``torch.compile``, plain ``F.conv2d`` (compiled graphs have no double backward).
    """
    if _plain():
        return F.conv2d(x, w, b, padding=padding)
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        x, w = x.to(dtype), w.to(dtype)
        b = None if b is None else b.to(dtype)
    return _Conv.apply(x, w, b, padding)


class _LeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.mark_dirty(x)
        y = F.leaky_relu_(x, LRELU_SLOPE)
        ctx.save_for_backward(y)  # the sign of the output decides the slope (slope > 0)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return _LeakyReLUGrad.apply(g, y)


class _LeakyReLUGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, y):
        ctx.save_for_backward(y)
        return torch.ops.aten.leaky_relu_backward(g, y, LRELU_SLOPE, True)

    @staticmethod
    def backward(ctx, gg):
        (y,) = ctx.saved_tensors
        # Linear in g; its derivative in y is 0 almost everywhere: no gradient (None), not zeros.
        return _LeakyReLUGrad.apply(gg, y), None


class _AvgPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.avg_pool2d(x, 2)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _AvgPool2Grad.apply(g, x.detach())


class _AvgPool2Grad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, x):
        return torch.ops.aten.avg_pool2d_backward(g, x, [2, 2], [2, 2], [0, 0], False, True, None)

    @staticmethod
    def backward(ctx, gg):
        # Linear in g, independent of x's values: nothing for x (PyTorch's own returns a
        # full-size NCHW tensor of zeros here, then adds it to a channels-last gradient).
        return avg_pool2x2(gg), None


def avg_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)``, differentiable to any order without zero gradients (see _AvgPool2Grad)."""
    if _plain():
        return F.avg_pool2d(x, 2)
    return _AvgPool2.apply(x)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """In-place LReLU(0.2) of a fresh tensor (a layer's output), differentiable to any order."""
    if _plain():
        return F.leaky_relu(x, LRELU_SLOPE)
    return _LeakyReLU.apply(x)

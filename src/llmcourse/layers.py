"""The layers deep networks are built from, written out with plain tensor arithmetic.

Each function computes what a ``torch.nn`` layer computes, in the most direct way that is still
vectorized; the tests compare every one with PyTorch's own implementation.

* **dense** (fully connected): every output sees every input, y = x Wᵀ + b.
* **convolution**: a small kernel slides over the image; the same weights are used at every
  position, so the layer detects a pattern wherever it appears, with few parameters::

      y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v x[n, c, i·s + u, j·s + v] · w[o, c, u, v]

* **pooling**: the maximum or the mean over each k × k window; no weights, it shrinks the image
  and makes the output less sensitive to small shifts.
* **recurrent**: the same cell is applied at every time step and carries a hidden state,
  h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh).
* **dropout**: during training each unit is zeroed with probability p and the survivors are
  scaled by 1/(1 - p) ("inverted" dropout), so nothing changes at evaluation time.
* **normalization**: batch norm standardizes each feature over the batch, layer norm each sample
  over its features; both then scale by γ and shift by β::

      y = γ (x - mean) / √(var + ε) + β       (var: the biased variance, divided by n)

Bad shapes raise a ``ValueError`` that says what was expected.
"""

from __future__ import annotations

import torch

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "dense",
    "dropout",
    "layer_norm",
    "max_pool2d",
    "rnn",
    "rnn_cell",
]


def _need(x: torch.Tensor, dims: int, what: str, shape: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{what} must be {dims}-D {shape}, got shape {tuple(x.shape)}")


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A fully connected layer, y = x Wᵀ + b: ``x`` is ``(..., in)``, ``weight`` ``(out, in)``."""
    _need(weight, 2, "weight", "(out_features, in_features)")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1] if x.dim() else 0} features, the weight expects {weight.shape[1]}"
        )
    y = x @ weight.T
    return y if bias is None else y + bias


def _windows(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, list[tuple[int, int, torch.Tensor]]]:
    """The output size and, for each kernel offset (u, v), the strided view of ``x`` it sees."""
    (kh, kw), (sh, sw) = kernel, stride
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"kernel size and stride must be positive, got {kernel} and {stride}")
    height, width = x.shape[-2:]
    if kh > height or kw > width:
        raise ValueError(f"a {kh}x{kw} kernel does not fit in a {height}x{width} input")
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    views = [
        (u, v, x[..., u : u + sh * (out_h - 1) + 1 : sh, v : v + sw * (out_w - 1) + 1 : sw])
        for u in range(kh)
        for v in range(kw)
    ]
    return out_h, out_w, views


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """2-D convolution (strictly, cross-correlation, as in every deep-learning library).

    ``x`` is ``(batch, channels, height, width)``, ``weight`` ``(out_channels, channels, kh,
    kw)``. ``padding`` adds that many zeros on each side first. The loop runs over the kh·kw
    kernel offsets only: at each, the strided view of the input that this weight touches is
    multiplied by it for all positions at once.
    """
    _need(x, 4, "x", "(batch, channels, height, width)")
    _need(weight, 4, "weight", "(out_channels, in_channels, kh, kw)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels, the weight expects {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if ph or pw:
        n, c, h, w = x.shape
        padded = x.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
        padded[:, :, ph : ph + h, pw : pw + w] = x
        x = padded
    out_h, out_w, views = _windows(x, tuple(weight.shape[2:]), _pair(stride, "stride"))
    out = x.new_zeros(x.shape[0], weight.shape[0], out_h, out_w)
    for u, v, view in views:
        out = out + torch.einsum("nchw,oc->nohw", view, weight[:, :, u, v])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _window_stack(
    x: torch.Tensor, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None
) -> torch.Tensor:
    """Every window's entries stacked on a new first dimension, ready to be reduced over it."""
    if x.dim() < 2:
        raise ValueError(f"x must have height and width dimensions, got shape {tuple(x.shape)}")
    kernel = _pair(kernel, "kernel")
    _, _, views = _windows(x, kernel, _pair(kernel if stride is None else stride, "stride"))
    return torch.stack([view for _, _, view in views])


def max_pool2d(
    x: torch.Tensor, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """The maximum of each window; ``x`` is ``(..., height, width)``, stride defaults to kernel."""
    return _window_stack(x, kernel, stride).amax(dim=0)


def avg_pool2d(
    x: torch.Tensor, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """The mean of each window; ``x`` is ``(..., height, width)``, stride defaults to kernel."""
    return _window_stack(x, kernel, stride).mean(dim=0)


def rnn_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of an Elman RNN: h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh).

    ``x`` is ``(batch, input_size)``, ``h`` ``(batch, hidden)``, ``w_ih`` ``(hidden,
    input_size)`` and ``w_hh`` ``(hidden, hidden)``: the layout of ``torch.nn.RNN``.
    """
    _need(w_hh, 2, "w_hh", "(hidden, hidden)")
    if h.shape[-1] != w_hh.shape[0] or w_hh.shape[0] != w_hh.shape[1]:
        raise ValueError(
            f"h has {h.shape[-1]} features; w_hh must be square of that size, "
            f"got {tuple(w_hh.shape)}"
        )
    return torch.tanh(dense(x, w_ih, b_ih) + dense(h, w_hh, b_hh))


def rnn(
    xs: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``rnn_cell`` over a sequence ``xs`` of shape ``(time, batch, input_size)``.

    Returns every hidden state ``(time, batch, hidden)`` and the last one, like
    ``torch.nn.RNN`` (one layer, tanh, ``batch_first=False``). The same weights serve every
    step, which is what lets an RNN read sequences of any length.
    """
    _need(xs, 3, "xs", "(time, batch, input_size)")
    if xs.shape[0] == 0:
        raise ValueError("the sequence is empty (time = 0)")
    states, h = [], h0
    for x in xs:
        h = rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)
        states.append(h)
    return torch.stack(states), h


def dropout(
    x: torch.Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by 1/(1 - p).

    The scaling keeps the expected value of every unit unchanged, so at evaluation time
    (``training=False``) the layer does nothing at all.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"the dropout probability p must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x
    # draw on the generator's device (a CPU generator may serve a GPU tensor), then move
    where = generator.device if generator is not None else x.device
    keep = (torch.rand(x.shape, generator=generator, device=where) >= p).to(x.device)
    return x * keep / (1.0 - p)


def batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch normalization over ``(batch, features)`` or ``(batch, channels, height, width)``.

    In training, each feature (channel) is standardized with the mean and the biased variance
    of the batch (and of all positions, for images), and the running statistics, if given, are
    updated in place: r ← (1 - momentum) r + momentum · stat, with the *unbiased* variance
    (n / (n - 1) times the biased one), as PyTorch does. In evaluation the running statistics
    are used instead, so the output for one sample does not depend on the rest of the batch.
    """
    if x.dim() not in (2, 4):
        raise ValueError(f"x must be (batch, features) or (batch, C, H, W), got {tuple(x.shape)}")
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
    if training:
        count = x.numel() // x.shape[1]
        if count < 2:
            raise ValueError("batch norm needs more than one value per feature in training")
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("evaluation mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if gamma is not None:
        y = y * gamma.view(shape)
    if beta is not None:
        y = y + beta.view(shape)
    return y


def layer_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Layer normalization over the last dimension: each sample is standardized on its own.

    It needs no batch statistics, behaves the same in training and evaluation, and is the
    normalization of the Transformer.
    """
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x needs a non-empty last dimension, got shape {tuple(x.shape)}")
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def compare_with_torch(seed: int = 0) -> dict[str, float]:
    """Run every layer here and its PyTorch counterpart on the same random float64 inputs and
    return the largest absolute difference for each (the tests use stricter, separate checks)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, w, b = rand(2, 3, 9, 8), rand(4, 3, 3, 2), rand(4)
    v, w_lin, b_lin = rand(5, 7), rand(3, 7), rand(3)
    xs, h0 = rand(6, 2, 3), rand(2, 4)
    w_ih, w_hh, b_ih, b_hh = rand(4, 3), rand(4, 4), rand(4), rand(4)
    feats, gamma, beta = rand(16, 5), rand(5), rand(5)
    reference_rnn = torch.nn.RNN(3, 4, dtype=torch.float64)
    with torch.no_grad():
        for name, value in [("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh)]:
            getattr(reference_rnn, name).copy_(value)
        reference_rnn.bias_ih_l0.copy_(b_ih)
        reference_rnn.bias_hh_l0.copy_(b_hh)
    pairs = {
        "dense": (dense(v, w_lin, b_lin), F.linear(v, w_lin, b_lin)),
        "conv2d": (
            conv2d(x, w, b, stride=(2, 1), padding=1),
            F.conv2d(x, w, b, stride=(2, 1), padding=1),
        ),
        "max_pool2d": (max_pool2d(x, 3, 2), F.max_pool2d(x, 3, 2)),
        "avg_pool2d": (avg_pool2d(x, 2), F.avg_pool2d(x, 2)),
        "rnn": (rnn(xs, h0, w_ih, w_hh, b_ih, b_hh)[0], reference_rnn(xs, h0[None])[0]),
        "batch_norm": (
            batch_norm(feats, gamma, beta),
            F.batch_norm(feats, None, None, gamma, beta, training=True),
        ),
        "layer_norm": (layer_norm(feats, gamma, beta), F.layer_norm(feats, (5,), gamma, beta)),
    }
    return {
        name: float((ours - theirs).detach().abs().max()) for name, (ours, theirs) in pairs.items()
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.layers``: compare every layer with PyTorch's and print the gaps."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.layers",
        description="Run each layer written here (dense, conv2d, pooling, RNN, batch and layer "
        "norm) next to PyTorch's on random float64 inputs and print the largest difference.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, gap in compare_with_torch(args.seed).items():
        print(f"{name:>11}: largest difference from PyTorch {gap:.1e}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

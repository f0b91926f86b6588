"""Winograd F(4x4, 3x3) and F(6x6, 3x3) convolutions: the same output as a 3x3 stride-1 conv with 4x
(5.1x) fewer multiplies.

A 3x3 convolution computes each 4x4 output tile from a 6x6 input tile with 144 multiply-adds per
(input channel, output channel) pair; the Winograd/Toom-Cook algorithm F(4x4, 3x3) does it with 36
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [ (G w G^T) * (B^T d B) ] A        (per tile; * is elementwise over the 6x6 domain)

Summed over input channels, the elementwise products become 36 independent matrix products
``U[ij] (K x C) @ V[ij] (C x tiles)``, which run at the machine's GEMM peak. The transforms of the
input (``B^T d B``) and output (``A^T m A``) cost memory traffic, not FLOPs, so the trade pays off
for wide layers (>= 128 channels); for narrow ones the direct convolution stays faster.

F(6x6, 3x3) computes 6x6 output tiles from 8x8 input tiles: 64 products per tile, 1.78 per output
pixel where F(4x4) needs 2.25, and its intermediates shrink by the same ratio (they, not the FLOPs,
bound a large map's time). It costs accuracy, so featx.accel.tuning picks it only where it was measured
clearly faster than F(4x4).

Numerics: F(4x4)'s interpolation points are (0, -1, 1, 1/2, -2, inf), which in fp32 give about 2x
the direct convolution's rounding error (about 5e-6 of max|output| for a 256-channel layer) where the
common (0, 1, -1, 2, -2, inf) gives 6x (Barabasz et al., "Error Analysis and Improving the Accuracy
of Winograd Convolution for Deep Neural Networks", 2020). F(6x6)'s (0, -1, 1, 1/2, -1/2, 2, -2, inf)
give about 2e-5..3e-5 (measured on 128..512-channel layers). The matrices are derived in exact
rational arithmetic below, not typed in.

Every op is plain torch (pad, conv2d, matmul, transpose, reshape, pixel_shuffle), so the module runs in
eager mode and exports to ONNX as Pad/Conv/MatMul/Transpose/Reshape (and DepthToSpace), which ONNX Runtime
and OpenVINO run at GEMM speed.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Collection, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WinogradConv2d", "winograd_matrices", "winograd_eligible", "convert_to_winograd", "TILES", "GRAPHS"]

TILE = 4  # the default output tile side m of F(m x m, 3 x 3)
# the finite interpolation points of each tile side featx builds (the point at infinity is implied)
POINTS = {4: (Fraction(0), Fraction(-1), Fraction(1), Fraction(1, 2), Fraction(-2)),
          6: (Fraction(0), Fraction(-1), Fraction(1), Fraction(1, 2), Fraction(-1, 2), Fraction(2), Fraction(-2))}
TILES = tuple(POINTS)
# names the graph forward() builds, for the cache keys of timed verdicts (featx.accel.tuning): a verdict timed on
# another formulation (padding, tile layout, tile sides, graph per runtime) is measured again
FORMULATION = "F4x4-F6x6-v4"
# The two graphs forward() can build (same numbers), each the faster in some runtime:
# - "fused_pad_transpose": the map reshaped to planes and padded by constants, which OpenVINO folds into the
#   input-transform conv (pads computed from the shape run there as a separate reference-kernel Pad); the output
#   tiles put into place by one 6-D transpose. For OpenVINO and PyTorch eager.
# - "pad_depth_to_space": the NCHW map padded by amounts computed from its shape, then reshaped to planes; the tiles
#   put into place by a 4-D transpose and pixel_shuffle (a DepthToSpace node). For ONNX Runtime, which runs the 6-D
#   transpose markedly slower (a quarter on a 256-channel 128x128 layer).
GRAPHS = ("fused_pad_transpose", "pad_depth_to_space")


def winograd_matrices(m: int = TILE, r: int = 3, points: Optional[Sequence] = None) -> tuple:
    """``(B^T, G, A^T)`` of F(m, r) as new float64 tensors: shapes (n, n), (n, r), (m, n) with
    n = m + r - 1, from the n-1 finite interpolation ``points`` (ints or Fractions) plus the point
    at infinity (default: featx's points for that m, ``POINTS[m]``).

    A^T evaluates the product polynomial at the points, G evaluates the filter polynomial (scaled
    by the Lagrange denominators), and B^T is the unique matrix making the bilinear algorithm
    exact; it is solved for in rational arithmetic and checked.
    """
    if points is None:
        if m not in POINTS:
            raise ValueError(f"featx has points for F({'/'.join(map(str, TILES))}, 3); give points for F({m}, {r})")
        points = POINTS[m]
    return tuple(t.clone() for t in _matrices(m, r, tuple(Fraction(x) for x in points)))


@lru_cache(maxsize=None)
def _matrices(m: int, r: int, points: tuple) -> tuple:
    n = m + r - 1
    p = list(points)
    if len(p) != n - 1 or len(set(p)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {points}")
    at = [[p[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j in range(n - 1):
        denom = Fraction(1)
        for k in range(n - 1):
            if k != j:
                denom *= p[j] - p[k]
        g.append([p[j] ** k / denom for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    # B^T column l solves sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k] for all (i, k): n unknowns,
    # m*r equations of full column rank; solve the normal equations exactly.
    rows = [[at[i][j] * g[j][k] for j in range(n)] for i in range(m) for k in range(r)]
    ata = [[sum(row[a] * row[b] for row in rows) for b in range(n)] for a in range(n)]
    bt_cols = []
    for l in range(n):
        rhs = [Fraction(int(l == i + k)) for i in range(m) for k in range(r)]
        atb = [sum(row[a] * y for row, y in zip(rows, rhs)) for a in range(n)]
        bt_cols.append(_solve(ata, atb))
        residual = [sum(row[j] * bt_cols[-1][j] for j in range(n)) - y for row, y in zip(rows, rhs)]
        if any(residual):
            raise ArithmeticError(f"points {points} give no exact F({m}, {r}) algorithm")
    bt = [[bt_cols[l][j] for l in range(n)] for j in range(n)]
    as_tensor = lambda rows_: torch.tensor([[float(v) for v in row] for row in rows_], dtype=torch.float64)
    return as_tensor(bt), as_tensor(g), as_tensor(at)


def _solve(a: list, b: list) -> list:
    """Gauss-Jordan elimination in exact fractions (a is small and non-singular)."""
    n = len(b)
    rows = [list(a[i]) + [b[i]] for i in range(n)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for i in range(n):
            if i != col and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [v - f * w for v, w in zip(rows[i], rows[col])]
    return [rows[i][n] for i in range(n)]


def winograd_eligible(conv: nn.Module, min_channels: int = 128, max_channels: int = 1 << 30) -> bool:
    """True for a plain 3x3, stride-1, undilated, ungrouped ``nn.Conv2d`` with zero padding and
    input and output channels in ``[min_channels, max_channels]``."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and min_channels <= min(conv.in_channels, conv.out_channels)
            and max(conv.in_channels, conv.out_channels) <= max_channels)


class WinogradConv2d(nn.Module):
    """Drop-in inference replacement for an eligible 3x3 conv (see :func:`winograd_eligible`).

    Input ``(N, C, H, W)`` -> output ``(N, K, H + 2p - 2, W + 2p - 2)`` for padding ``p``, equal
    to the conv's output up to fp32 rounding, computed in ``tile`` x ``tile`` output tiles (4 or 6:
    F(4x4, 3x3) or F(6x6, 3x3)), built as the ``graph`` the target runtime runs fastest (``GRAPHS``; same values).
    The weights are transformed once, here, in float64.
    """

    def __init__(self, conv: nn.Conv2d, tile: int = TILE, graph: str = GRAPHS[0]) -> None:
        super().__init__()
        if not winograd_eligible(conv, min_channels=1):
            raise ValueError(f"WinogradConv2d needs a 3x3 stride-1 ungrouped conv, got {conv}")
        if tile not in TILES:
            raise ValueError(f"tile must be one of {TILES} (F(m x m, 3 x 3) output tiles), got {tile!r}")
        if graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
        bt, g, at = winograd_matrices(tile)
        m, n = tile, tile + 2
        self.tile, self.graph = tile, graph
        self.in_channels, self.out_channels, self.padding = conv.in_channels, conv.out_channels, conv.padding[0]
        w = conv.weight.detach().to(torch.float64)
        dtype, device = conv.weight.dtype, conv.weight.device
        # U[ij] = (G w G^T)_ij as (K, C) matrices, one per point of the n x n transform domain
        u = torch.einsum("iu,kcuv,jv->ijkc", g, w.cpu(), g).reshape(n * n, self.out_channels, self.in_channels)
        self.register_buffer("u", u.to(device=device, dtype=dtype))
        # B^T d B for every n x n tile at once: a 1-channel conv (stride m) over the N*C input planes
        self.register_buffer("input_transform", torch.einsum("iu,jv->ijuv", bt, bt).reshape(n * n, 1, n, n)
                             .to(device=device, dtype=dtype))
        self.register_buffer("output_transform", torch.einsum("ri,sj->rsij", at, at).reshape(m * m, n * n)
                             .to(device=device, dtype=dtype))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.out_channels, dtype=dtype)
        self.register_buffer("bias", bias.to(device=device, dtype=dtype).reshape(1, -1, 1, 1))

    def extra_repr(self) -> str:
        m = self.tile
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), padding={self.padding}, F({m}x{m}, 3x3)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n, p = self.tile, self.tile + 2, self.padding
        batch, channels, height, width = x.shape
        out_h, out_w = height + 2 * p - 2, width + 2 * p - 2
        tiles_h, tiles_w = (out_h + m - 1) // m, (out_w + m - 1) // m
        # one name for every intermediate, so each is freed as soon as the next exists (eager peak memory)
        fused = self.graph == "fused_pad_transpose"
        if fused:  # constant pads (p before, p + m - 1 after) cover every tile; the stride-m conv ignores the surplus
            t = F.pad(x.reshape(batch * channels, 1, height, width), (p, p + m - 1, p, p + m - 1))
        else:  # pads that make the map exactly tiles_h * m + 2 by tiles_w * m + 2
            t = F.pad(x, (p, tiles_w * m + 2 - width - p, p, tiles_h * m + 2 - height - p))
            t = t.contiguous().reshape(batch * channels, 1, tiles_h * m + 2, tiles_w * m + 2)
        t = F.conv2d(t, self.input_transform, stride=m)                        # (N*C, n*n, th, tw)
        t = t.reshape(batch, channels, n * n, tiles_h * tiles_w).transpose(1, 2)  # (N, n*n, C, T)
        t = torch.matmul(self.u, t)                                             # (N, n*n, K, T)
        t = torch.matmul(self.output_transform, t.reshape(batch, n * n, -1))    # (N, m*m, K*T)
        if fused:  # (N, m, m, K, th, tw) -> (N, K, th, m, tw, m): the tiles into place in one transpose (DCR order)
            t = t.reshape(batch, m, m, self.out_channels, tiles_h, tiles_w).permute(0, 3, 4, 1, 5, 2)
            t = t.reshape(batch, self.out_channels, tiles_h * m, tiles_w * m)
        else:  # (N, m*m, K, T) -> (N, K*m*m, th, tw), pixel_shuffle's CRD order; it puts each tile into place
            t = t.reshape(batch, m * m, self.out_channels, tiles_h * tiles_w).transpose(1, 2)
            t = F.pixel_shuffle(t.reshape(batch, self.out_channels * m * m, tiles_h, tiles_w), m)
        # narrow, not slicing: its result size is exactly out_h (slicing gives min(out_h, 4 * tiles_h)
        # to the exporter's symbolic shapes, and those nested mins grow layer by layer)
        return t.narrow(2, 0, out_h).narrow(3, 0, out_w) + self.bias


def convert_to_winograd(model: nn.Module, min_channels: int = 128, max_channels: int = 1 << 30,
                        only: Optional[Union[Collection[str], Mapping[str, int]]] = None, tile: int = TILE,
                        graph: str = GRAPHS[0]) -> int:
    """Replace every eligible conv in ``model`` (in place) by a :class:`WinogradConv2d` with ``tile`` and
    ``graph`` (with ``only``: just the eligible convs of those qualified names; a mapping also gives
    each its tile); returns how many. For inference only: the replacement holds transformed weights as buffers."""
    count = 0
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{prefix}.{name}" if prefix else name
            if winograd_eligible(child, min_channels, max_channels) and (only is None or qualified in only):
                setattr(parent, name, WinogradConv2d(child, only[qualified] if isinstance(only, Mapping) else tile,
                                                     graph))
                count += 1
    return count

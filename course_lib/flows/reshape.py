"""Volume-free rearrangements and the Haar wavelet transform.

* ``Squeeze``: space-to-depth, (N, C, H, W) -> (N, C f^2, H/f, W/f) (Dinh et al. 2017, sec. 3.6);
  channel ``c f^2 + i f + j`` holds pixel ``(f h + i, f w + j)`` of input channel ``c``; logdet 0.
* ``HaarDownsampling``: one level of the 2D Haar transform (IRN, Xiao et al. 2020, sec. 3.2).
  Each 2x2 block ``[[a, b], [c, d]]`` of every channel becomes four coefficients

      LL = (a + b + c + d) s,  H = (a - b + c - d) s,  V = (a + b - c - d) s,  D = (a - b - c + d) s

  with ``s = 1/4`` (IRN: LL is the 2x2 mean, i.e. a downscaled image) or ``s = 1/2``
  (``orthonormal=True``). Output channels are ordered band-first: the C LL channels come first,
  then the C H, C V and C D channels, so ``y[:, :C]`` is the low-resolution image.
  Per 2x2 block the matrix has ``|det| = 16 s^4``; the logdet is ``(C H W / 4) log(16 s^4)``,
  which is ``(#elements / 4) log(1/16)`` for IRN's ``s = 1/4``.
* ``Permutation``: a fixed channel permutation (reverse or random); logdet 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import InvertibleModule, Tensor

__all__ = ["HaarDownsampling", "Permutation", "Squeeze"]

# rows: LL, H (left minus right), V (top minus bottom), D (diagonal); columns: a, b, c, d
_HAAR = torch.tensor(
    [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]]
)


def _check_image(x: Tensor, factor: int, where: str, channels: int | None = None) -> None:
    if x.dim() != 4:
        raise ValueError(f"{where} expects images of shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(
            f"{where}: height and width must be divisible by {factor}, got {tuple(x.shape[2:])}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{where} expects {channels} channels, got {x.shape[1]}")


class Squeeze(InvertibleModule):
    """Space-to-depth by ``factor`` (pixel unshuffle); the inverse is depth-to-space."""

    def __init__(self, factor: int = 2):
        super().__init__()
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"factor must be an int >= 2, got {factor!r}")
        self.factor = factor

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        _check_image(x, self.factor, "Squeeze")
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        if z.dim() != 4 or z.shape[1] % self.factor**2:
            raise ValueError(
                f"Squeeze.inverse expects (N, C*{self.factor**2}, H, W), got {tuple(z.shape)}"
            )
        return F.pixel_shuffle(z, self.factor)

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._inverse(z, cond), z.new_zeros(z.shape[0])


class HaarDownsampling(InvertibleModule):
    """One Haar wavelet level, LL bands first; exact logdet (see module docstring)."""

    def __init__(self, channels: int, *, orthonormal: bool = False):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.scale = 0.5 if orthonormal else 0.25
        self.register_buffer("matrix", _HAAR * self.scale)
        # (H_haar)^-1 = H_haar^T / 4 because the rows are orthogonal with squared norm 4
        self.register_buffer("inverse_matrix", _HAAR.T / (4 * self.scale))
        self.log_det_per_block = math.log(16 * self.scale**4)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        _check_image(x, 2, "HaarDownsampling", self.channels)
        n, c, h, w = x.shape
        blocks = F.pixel_unshuffle(x, 2).view(n, c, 4, h // 2, w // 2)  # a, b, c, d per channel
        bands = torch.einsum("kj,ncjhw->nkchw", self.matrix.to(x.dtype), blocks)
        logdet = x.new_full((n,), c * h * w / 4 * self.log_det_per_block)
        return bands.reshape(n, 4 * c, h // 2, w // 2), logdet

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        # one 2x2 block per band position: z[0].numel() / 4 blocks, each with |det| = 1 / (16 s^4)
        n = z.shape[0]
        x = self._inverse(z, cond)
        return x, z.new_full((n,), -z[0].numel() / 4 * self.log_det_per_block)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        if z.dim() != 4 or z.shape[1] != 4 * self.channels:
            raise ValueError(
                f"HaarDownsampling.inverse expects (N, {4 * self.channels}, H, W), got {tuple(z.shape)}"
            )
        n, _, h, w = z.shape
        bands = z.view(n, 4, self.channels, h, w)
        blocks = torch.einsum("jk,nkchw->ncjhw", self.inverse_matrix.to(z.dtype), bands)
        return F.pixel_shuffle(blocks.reshape(n, 4 * self.channels, h, w), 2)


class Permutation(InvertibleModule):
    """Fixed permutation of dimension 1 (channels, or coordinates of 2D points)."""

    def __init__(self, channels: int, kind: str = "reverse", *, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif kind == "random":
            perm = torch.randperm(channels, generator=generator)
        else:
            raise ValueError(f"kind must be 'reverse' or 'random', got {kind!r}")
        self.channels = channels
        self.reverse = kind == "reverse"  # torch.flip is cheaper than a gather
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def _check(self, x: Tensor) -> None:
        if x.shape[1] != self.channels:
            raise ValueError(f"Permutation expects {self.channels} channels, got {x.shape[1]}")

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(x)
        y = x.flip(1) if self.reverse else x[:, self.perm]
        return y, x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        self._check(z)
        return z.flip(1) if self.reverse else z[:, self.inverse_perm]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._inverse(z, cond), z.new_zeros(z.shape[0])

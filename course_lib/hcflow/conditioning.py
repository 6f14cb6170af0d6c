"""The conditioning network of HCFlow: features that set the distribution of the high frequencies.

HCFlow (Liang et al. 2021, sec. 3.2) models each split-off high-frequency component ``a_l`` with a
conditional flow and a conditional Gaussian. Both see a feature map ``u_l`` computed from the
*coarser* representation by a small RRDB network (the residual-in-residual dense blocks of ESRGAN,
Wang et al. 2018):

    u_l = RRDB-net( y_l )                              coarsest level (y_L = the LR image)
    u_l = RRDB-net( [y_l, up2(u_{l+1})] )              finer levels (the hierarchy)

where ``y_l`` is what the flow kept at level ``l`` and ``up2`` is nearest-neighbour upsampling.
The network here follows the official code's layout: ``conv_first -> trunk0 -> trunk1 ->
trunk_conv (+ conv_first)``; for SR the features of both trunks are concatenated (``2 nf``
channels), for rescaling only the last one is used (``nf`` channels).
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs with dense connections (growth ``gc``), LeakyReLU(0.2), residual ``x + 0.2 f(x)``.

    The residual scaling by 0.2 and the small initialisation (Kaiming scaled by 0.1) are ESRGAN's
    tricks for training deep stacks without normalisation.
    """

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        _positive_int(nf, "nf")
        _positive_int(gc, "gc")
        self.convs = nn.ModuleList(nn.Conv2d(nf + k * gc, gc, 3, padding=1) for k in range(4))
        self.out = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        for conv in [*self.convs, self.out]:
            nn.init.kaiming_normal_(conv.weight, a=0.2)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + 0.2 * self.out(torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock`, residual ``x + 0.2 f(x)``."""

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(nf, gc) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.blocks(x)


class ConditionEncoder(nn.Module):
    """Feature extractor ``u (N, in_channels, h, w) -> (N, out_channels, h, w)`` for one level.

    Args:
        in_channels: channels of the conditioning input (3 for the LR image; kept channels plus
            the coarser level's features for the finer levels).
        blocks: RRDBs in the two trunks, ``(nb0, nb1)``; the paper uses (7, 7) for SR x4 and
            (2, 1) for rescaling. A trunk may have 0 blocks.
        nf: feature width (64 in the paper).
        gc: growth channels inside the dense blocks (32 for SR, 16 for rescaling).
        two_features: return ``[trunk0, trunk1]`` features (SR, ``2 nf`` channels) or only the
            last one (rescaling, ``nf`` channels).
    """

    def __init__(self, in_channels: int, blocks: tuple[int, int] = (7, 7), nf: int = 64, gc: int = 32,
                 *, two_features: bool = True):
        super().__init__()
        _positive_int(in_channels, "in_channels")
        if len(blocks) != 2 or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in blocks):
            raise ValueError(f"blocks must be two non-negative ints (nb0, nb1), got {blocks!r}")
        self.in_channels = in_channels
        self.two_features = two_features
        self.out_channels = nf * (2 if two_features else 1)
        self.conv_first = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.trunk0 = nn.Sequential(*(RRDB(nf, gc) for _ in range(blocks[0])))
        self.trunk1 = nn.Sequential(*(RRDB(nf, gc) for _ in range(blocks[1])))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)

    def forward(self, u: Tensor) -> Tensor:
        if u.dim() != 4 or u.shape[1] != self.in_channels:
            raise ValueError(f"ConditionEncoder expects (N, {self.in_channels}, h, w), got {tuple(u.shape)}")
        first = self.conv_first(u)
        f1 = self.trunk0(first)
        f2 = self.trunk_conv(self.trunk1(f1)) + first
        return torch.cat([f1, f2], dim=1) if self.two_features else f2

"""KernelGAN's hyper-parameters: :class:`KernelGANConfig` (defaults of the official code)."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["KernelGANConfig", "REGULARIZERS", "PAPER_ITERATIONS"]

PAPER_ITERATIONS = 3000
REGULARIZERS = ("bicubic", "sum_to_one", "boundaries", "sparsity", "centre")


@dataclass(frozen=True)
class KernelGANConfig:
    """Hyper-parameters of KernelGAN; the defaults are those of the official code.

    Periods (``lr_decay_every``, ``constraint_update_every``) are the paper's; runs shorter than
    ``full_schedule_after`` iterations compress them (:meth:`~course_lib.kernelgan.config.KernelGANConfig.period`), so that a 300-step run goes
    through the same phases as a 3000-step one.

    ``bicubic_reference`` is what the bicubic prior compares each channel of ``G``'s output with:
    ``"channel_sum"`` (official ``loss.py:DownScaleLoss``, whose bicubic convolution has a
    (C, C, 8, 8) weight and so adds the bicubic downscalings of the three colour channels; a grey
    image counts three times, as the official code sees it after converting it to RGB) or
    ``"per_channel"`` (each channel's own bicubic downscaling, the paper's formula). The switch
    threshold ``bicubic_threshold = 0.4`` was set for the official, three times larger reference: with
    ``"per_channel"`` a generator whose kernel is still zero already passes it on most photos, the
    bicubic prior fades before it has done anything, and ``G`` can stay near the zero kernel
    (chapter 7, "The collapse"). ``"per_channel"`` is kept to show that failure.

    ``adversarial_after_bicubic``: ``G``'s adversarial term is off until the bicubic prior is met
    (``ConstraintSchedule.similar_to_bicubic``), so that ``G`` starts the game from a bicubic-like
    kernel, as the paper describes the prior's role. Without it the adversarial gradient
    dominates while ``G``'s kernel is still near zero (``D``'s batch norm divides the fake crop by
    its own tiny spread, so D's verdict ignores the fake's scale and its gradient grows as the
    kernel shrinks); on some seeds ``G`` then leaves the bicubic prior behind with a kernel that
    sums to about 0 and never recovers (chapter 7, "The collapse").

    ``noise_in_g_step``: add the fake crops' noise (``noise_fake``) in ``G``'s step too, so that
    ``G`` is judged on what ``D`` was trained on (the official code adds it in ``D``'s step only).

    ``crops_per_step``: how many (G crop, D crop) pairs one iteration trains on (official KernelGAN:
    1; official KernelGAN-FKP: batches of 64). ``1`` draws exactly the crops of earlier versions.

    ``regularizers`` lists the kernel terms that are on (a subset of ``REGULARIZERS``; drop one
    for an ablation). ``g_structure=(13,)`` gives the one-layer generator of the chapter's
    comparison.
    """

    iterations: int = PAPER_ITERATIONS
    crop_size: int = 64
    g_structure: tuple[int, ...] = (7, 5, 3, 1, 1, 1)
    g_channels: int = 64
    d_channels: int = 64
    d_layers: int = 7
    d_kernel_size: int = 7
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay_every: int = 750
    lr_decay_factor: float = 0.1
    lambda_sum_to_one: float = 0.5
    lambda_boundaries: float = 0.5
    lambda_sparsity: float = 5.0
    lambda_centre: float = 1.0
    lambda_bicubic: float = 5.0
    bicubic_threshold: float = 0.4
    bicubic_patience: int = 3
    bicubic_decay: float = 100.0
    lambda_bicubic_min: float = 5e-6
    late_terms_below: float = 5e-3
    constraint_update_every: int = 200
    full_schedule_after: int = 1000
    noise_real: float = 2.0 / 255.0
    noise_fake: float = 1.0 / 255.0
    n_filtering: int = 40
    regularizers: tuple[str, ...] = REGULARIZERS
    bicubic_reference: str = "channel_sum"
    adversarial_after_bicubic: bool = True
    noise_in_g_step: bool = False
    crops_per_step: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {self.iterations!r}")
        if not self.g_structure or any(not isinstance(k, int) or k < 1 for k in self.g_structure):
            raise ValueError(f"g_structure must be a non-empty tuple of positive ints, got {self.g_structure!r}")
        kernel = sum(k - 1 for k in self.g_structure) + 1
        if not isinstance(self.crop_size, int) or self.crop_size < kernel + 2 * (self.d_kernel_size - 1) + 2:
            raise ValueError(
                f"crop_size {self.crop_size} is too small: G's {kernel}x{kernel} kernel and D's "
                f"{self.d_kernel_size}x{self.d_kernel_size} receptive field need at least "
                f"{kernel + 2 * (self.d_kernel_size - 1) + 2}"
            )
        unknown = set(self.regularizers) - set(REGULARIZERS)
        if unknown:
            raise ValueError(f"unknown regularizers {sorted(unknown)}; choose from {REGULARIZERS}")
        for name in ("g_channels", "d_channels", "d_layers", "d_kernel_size", "n_filtering", "crops_per_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.bicubic_reference not in ("channel_sum", "per_channel"):
            raise ValueError(f"bicubic_reference must be 'channel_sum' or 'per_channel', got {self.bicubic_reference!r}")
        if self.d_layers < 2:
            raise ValueError(f"d_layers must be at least 2, got {self.d_layers}")

    @property
    def kernel_size(self) -> int:
        """The side of the generator's effective kernel, ``sum(k - 1) + 1`` (13 for 7, 5, 3, 1, 1, 1)."""
        return sum(k - 1 for k in self.g_structure) + 1

    def period(self, paper_period: int) -> int:
        """A period of the paper's schedule for this run's length (at least 1).

        In the official schedule everything happens early: the bicubic prior fades and the late
        regularizers switch on by iteration ~600, the first learning-rate drop is at 750, and the
        kernel barely changes after ~1000 iterations. Runs of at least ``full_schedule_after``
        iterations therefore keep the paper's periods; shorter runs compress them by
        ``iterations / full_schedule_after`` so that they still go through every phase.
        """
        factor = min(1.0, self.iterations / self.full_schedule_after)
        return max(1, round(paper_period * factor))

    def without(self, *names: str) -> KernelGANConfig:
        """The same configuration with some regularizers switched off (for ablations)."""
        unknown = set(names) - set(REGULARIZERS)
        if unknown:
            raise ValueError(f"unknown regularizers {sorted(unknown)}; choose from {REGULARIZERS}")
        return replace(self, regularizers=tuple(r for r in self.regularizers if r not in names))

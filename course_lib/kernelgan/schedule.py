"""When each constraint acts: the bicubic prior fades, then sparsity and centre switch on
(:class:`ConstraintSchedule`, the official ``Learner``)."""

from __future__ import annotations

import math
from typing import Any

from .config import KernelGANConfig

__all__ = ["ConstraintSchedule"]


class ConstraintSchedule:
    """The weights of the bicubic prior and of the late regularizers over training (official
    ``Learner``): while ``G`` is far from bicubic downscaling only the bicubic prior (weight 5),
    sum-to-one and boundaries act. Once the bicubic loss has stayed below ``bicubic_threshold`` for
    ``bicubic_patience`` steps, the bicubic weight is divided by 100 every
    ``constraint_update_every`` steps (down to ``lambda_bicubic_min``), and when it falls below
    ``late_terms_below`` the sparsity (5) and centre (1) terms switch on.

    Used as a "scheduler" of :class:`~course_lib.training.Trainer` (``step()`` after every training
    step, ``state_dict`` in checkpoints): call :meth:`~course_lib.kernelgan.schedule.ConstraintSchedule.observe` with the step's bicubic loss first.
    """

    def __init__(self, config: KernelGANConfig):
        self.config = config
        self.step_count = 0
        self.lambda_bicubic = config.lambda_bicubic if "bicubic" in config.regularizers else 0.0
        self._bicubic_on = "bicubic" in config.regularizers
        self._decayed = config.lambda_bicubic  # follows the official decay even when the prior is off
        self.lambda_sparsity = 0.0
        self.lambda_centre = 0.0
        self.below_count = 0
        self.similar_to_bicubic = False
        self.late_terms_on = False
        self.last_bicubic = math.inf

    def observe(self, bicubic_loss: float) -> None:
        """Record the bicubic loss of the training step that was just done."""
        self.last_bicubic = float(bicubic_loss)

    def step(self) -> None:
        """Advance by one training step and update the weights (official ``Learner.update``)."""
        c = self.config
        iteration = self.step_count  # index of the step just done, as in the official loop
        self.step_count += 1
        if iteration == 0:
            return
        if not self.similar_to_bicubic:
            if self.last_bicubic < c.bicubic_threshold:
                self.below_count += 1
                if self.below_count >= c.bicubic_patience:
                    self.similar_to_bicubic = True
            else:
                self.below_count = 0
        elif iteration % c.period(c.constraint_update_every) == 0 and self._decayed > c.lambda_bicubic_min:
            self._decayed = max(self._decayed / c.bicubic_decay, c.lambda_bicubic_min)
            self.lambda_bicubic = self._decayed if self._bicubic_on else 0.0
            if not self.late_terms_on and self._decayed < c.late_terms_below:
                self.late_terms_on = True
                self.lambda_sparsity = c.lambda_sparsity if "sparsity" in c.regularizers else 0.0
                self.lambda_centre = c.lambda_centre if "centre" in c.regularizers else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state as plain numbers (saved in checkpoints)."""
        keys = ("step_count", "lambda_bicubic", "_decayed", "lambda_sparsity", "lambda_centre",
                "below_count", "similar_to_bicubic", "late_terms_on", "last_bicubic")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``."""
        for k, v in state.items():
            setattr(self, k, v)

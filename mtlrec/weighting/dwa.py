"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
CVPR 2019, eq. 7).

``w_k(t) = K·exp(r_k(t−1)/T) / Σ_i exp(r_i(t−1)/T)``,  ``r_k(t−1) = L̄_k(t−1) / L̄_k(t−2)``,
with ``L̄_k(e)`` the mean training loss of task k over epoch e (given to
:meth:`on_train_epoch_end`), K the number of tasks and T the temperature (default 2, the paper's
value). ``w_k = 1`` for the first two epochs, when the ratio is not yet defined.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

from torch import Tensor

from .base import BackwardFn, Weighting, weighted_sum


class DWAWeighting(Weighting):
    """Dynamic Weight Average; see the module docstring."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"weighting.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []
        self._weights: dict[str, float] = {}

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        self.history: list[dict[str, float]] = []  # epoch-mean losses, oldest first
        self._weights = {t: 1.0 for t in self.task_names}

    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        backward_fn(weighted_sum(losses, self._weights))

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    # History and weights travel with the module's state_dict (checkpoint resume).
    def get_extra_state(self) -> dict:
        return {"history": list(getattr(self, "history", [])), "weights": dict(self._weights)}

    def set_extra_state(self, state: dict) -> None:
        self.history = [dict(h) for h in state.get("history", [])]
        self._weights.update(state.get("weights", {}))

    def on_train_epoch_end(self, epoch_mean_losses: Mapping[str, float]) -> None:
        self.history.append({t: float(v) for t, v in epoch_mean_losses.items()})
        if len(self.history) < 2:
            return  # weights stay 1 for epochs 1 and 2
        prev2, prev1 = self.history[-2], self.history[-1]
        ratios = {}
        for t in self.task_names:
            a, b = prev1.get(t), prev2.get(t)
            ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b > 0
            if not ok:
                warnings.warn(
                    f"DWA: no usable epoch losses for task {t!r} in the last two epochs "
                    f"({b!r} -> {a!r}); using a descent rate of 1 for it",
                    stacklevel=2,
                )
            ratios[t] = a / b if ok else 1.0
        scaled = {t: r / self.temperature for t, r in ratios.items()}
        m = max(scaled.values())
        exps = {t: math.exp(v - m) for t, v in scaled.items()}
        z = sum(exps.values())
        k = len(self.task_names)
        self._weights = {t: k * e / z for t, e in exps.items()}

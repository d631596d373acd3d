"""Fixed (non-learned) task weights: equal, hand-set, or proportional to labelled data volume."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .base import BackwardFn, Weighting, weighted_sum


class FixedWeighting(Weighting):
    """``L = Σ_k w_k·L_k`` with constant weights.

    ``weights``: task -> weight; tasks left out keep weight 1 (so the default is equal weights).
    ``by_data_volume``: ``w_k = T·n_k / Σ_j n_j`` with ``n_k`` the task's labelled-example count
    given to :meth:`setup`, so the weights still sum to T (the number of tasks) like equal weights.
    The two options are exclusive.
    """

    stackable = True  # constant weights: K stacked seeds' losses combine with the same ones

    def __init__(
        self, weights: Mapping[str, float] | None = None, by_data_volume: bool = False
    ) -> None:
        super().__init__()
        if weights is not None and by_data_volume:
            raise ValueError(
                "FixedWeighting: give either `weights` or `by_data_volume=true`, not both"
            )
        self._given = {str(k): float(v) for k, v in weights.items()} if weights else {}
        self.by_data_volume = bool(by_data_volume)
        self._weights: dict[str, float] = {}

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        unknown = sorted(set(self._given) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"weighting.weights names unknown task(s) {unknown}; valid tasks are "
                f"{self.task_names}"
            )
        if self.by_data_volume:
            missing = [t for t in self.task_names if t not in labelled_counts]
            if missing:
                raise ValueError(
                    f"weighting.by_data_volume: no labelled count for task(s) {missing}"
                )
            counts = {t: float(labelled_counts[t]) for t in self.task_names}
            if any(c < 0 for c in counts.values()) or sum(counts.values()) <= 0:
                raise ValueError(
                    f"weighting.by_data_volume needs non-negative counts with a positive total, "
                    f"got {counts}"
                )
            total = sum(counts.values())
            n_tasks = len(self.task_names)
            self._weights = {t: n_tasks * c / total for t, c in counts.items()}
        else:
            self._weights = {t: self._given.get(t, 1.0) for t in self.task_names}

    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        backward_fn(weighted_sum(losses, self._weights))

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

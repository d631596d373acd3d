"""Training throughput: samples per second over training batches only (validation excluded)."""

from __future__ import annotations

import time

import lightning as L


class TrainThroughput(L.Callback):
    """Times each training epoch from its start to the start of validation (or its end)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self._started: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def _stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # data parallel: every process trains on its equal share of the global batch at once
        self.samples += len(batch) * trainer.world_size

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        # (trainer.training is False here, during fit's validation too: stop unconditionally;
        # _stop does nothing when no training epoch is being timed)
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

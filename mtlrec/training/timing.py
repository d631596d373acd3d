"""Training throughput: samples per second over training batches only (validation excluded)."""

from __future__ import annotations

import time

import lightning as L


class TrainThroughput(L.Callback):
    """Times each training epoch from its start to the start of validation (or its end).

    ``warmup_epochs``: the first epochs of a fit left out (a compiled run compiles in its first);
    when a fit has no epoch beyond them, every epoch counts.
    """

    def __init__(self, warmup_epochs: int = 0) -> None:
        self.warmup_epochs = warmup_epochs
        self.seconds = 0.0
        self.samples = 0
        self._started: float | None = None
        self._epochs = 0  # epochs started in this fit (a resumed fit compiles again)
        self._warmup = (0.0, 0)  # (seconds, samples) of the warm-up epochs

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._epochs == self.warmup_epochs:
            self._warmup = (self.seconds, self.samples)
        self._epochs += 1
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
        seconds, samples = self.seconds - self._warmup[0], self.samples - self._warmup[1]
        if samples <= 0:  # no epoch beyond the warm-up
            seconds, samples = self.seconds, self.samples
        return samples / seconds if seconds else 0.0

"""Early stopping that survives an interruption.

Lightning's :class:`~lightning.pytorch.callbacks.EarlyStopping` keeps its counters in the
checkpoint but not its decision: a run killed after it decided to stop (while the best checkpoint
was being evaluated) resumed from ``last.ckpt``, trained more epochs and only then stopped again,
so its record differed from the uninterrupted run's. :class:`StayStopped` (added to every run)
stops a resumed run whose patience had run out before it trains anything. It is a callback of its
own rather than a subclass in ``conf/callbacks``, so the configs, and the hashes of published
runs, stay as they were.
"""

from __future__ import annotations

import lightning as L


class StayStopped(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for stopping in trainer.early_stopping_callbacks:
            if stopping.stopped_epoch > 0 or stopping.wait_count >= stopping.patience > 0:
                trainer.should_stop = True

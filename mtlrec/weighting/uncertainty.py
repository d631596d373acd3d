"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each task k has a learnable ``s_k = log σ_k²`` and contributes
  regression (Gaussian likelihood):        ``½·e^{−s_k}·L_k + ½·s_k``  (eq. 5 of the paper, with
                                            ``1/(2σ²) = ½e^{−s}`` and ``log σ = ½s``)
  classification (softmax/sigmoid, CE):     ``e^{−s_k}·L_k + ½·s_k``    (eq. 10's approximation)
For a regression task with mean-squared-error ``L_k`` the objective in ``s_k`` is minimised at
``e^{s_k} = L_k``: the learned variance tracks the task's residual variance.

The form per task follows the task kind (``"regression"`` → the ½ form; ``"binary"`` /
``"multiclass"`` → the classification form). Kinds come from the ``task_kinds`` constructor argument
if given, otherwise from ``setup(..., task_kinds=...)``; ``form="regression"`` or
``form="classification"`` forces one form on every task.

Mechanics: the model gets one backward of ``Σ_k c_k·e^{−s_k}·L_k`` with the multipliers detached
(the ``½s_k`` term has no model gradient), through ``backward_fn``; the ``s_k`` then get their exact
gradient ``−c_k·e^{−s_k}·L_k + ½`` from a tiny separate graph on the detached losses and are stepped
by this module's own optimizer (default Adam, lr 1e-2). The result is the same joint gradient step
as back-propagating the full objective, but the loss-scaling of a precision plugin never reaches
``s`` and the model's optimizer never sees it. ``s`` is not clamped: the objective is strictly
convex in ``s_k`` for ``L_k > 0``, so nothing can freeze a weight. A task whose loss is exactly 0 in
a step (no labelled rows in the batch) leaves its ``s_k`` alone that step: its ``½s_k`` term alone
would otherwise pull ``s_k`` down.

Caveat on the default optimizer: for a task whose loss is ≫ 1 the initial gradient
``−c·L_k + ½`` is huge, and Adam's second-moment estimate remembers it for ~1/(1−β₂) = 1000
steps, so ``s_k`` then approaches ``log L_k`` slowly (seen in experiments/gradnorm_toy with
L ≈ 10⁴). Losses of order 1 (cross-entropy) are not affected.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .base import BackwardFn
from .learned import LearnedWeighting, OptimizerFactory

# Multiplier c of e^{-s} in each task's term.
_FORM_COEF = {"regression": 0.5, "classification": 1.0}
# multi-label BCE (per-tag Bernoulli likelihoods, averaged) takes the classification form, like binary
_KIND_TO_FORM = {"regression": "regression", "binary": "classification", "multiclass": "classification",
                 "multilabel": "classification"}


class UncertaintyWeighting(LearnedWeighting):
    """Learned ``s_k = log σ_k²`` per task; see the module docstring.

    ``lr``: learning rate of the default Adam optimizer for the ``s_k`` (ignored when
    ``optimizer`` — a factory taking the parameters, e.g. a Hydra ``_partial_`` optimizer — is given).
    ``form``: ``"auto"`` (per task kind), ``"regression"`` or ``"classification"``.
    ``task_kinds``: optional task -> kind override of what ``setup`` receives.
    ``init_log_var``: initial ``s_k`` (0 → σ² = 1, as in the paper's usual initialisation).
    """

    def __init__(
        self,
        lr: float = 1e-2,
        form: str = "auto",
        task_kinds: Mapping[str, str] | None = None,
        init_log_var: float = 0.0,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(lr, optimizer)
        if form != "auto" and form not in _FORM_COEF:
            raise ValueError(
                f"weighting.form must be 'auto', 'regression' or 'classification', got {form!r}"
            )
        self.form = form
        self._kinds_override = dict(task_kinds) if task_kinds is not None else None
        self.init_log_var = float(init_log_var)

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        super()._on_setup(labelled_counts)
        forms = {}
        if self.form != "auto":
            forms = {t: self.form for t in self.task_names}
        else:
            kinds = self._kinds_override if self._kinds_override is not None else self.task_kinds
            missing = [t for t in self.task_names if t not in kinds]
            if missing:
                raise ValueError(
                    f"uncertainty weighting with form='auto' needs the kind of task(s) {missing} "
                    "(pass task_kinds to setup or to the weighting, or set weighting.form to "
                    "'regression' or 'classification')"
                )
            for t in self.task_names:
                if kinds[t] not in _KIND_TO_FORM:
                    raise ValueError(
                        f"task {t!r}: kind {kinds[t]!r} unknown to uncertainty weighting; "
                        f"expected one of {sorted(_KIND_TO_FORM)}"
                    )
                forms[t] = _KIND_TO_FORM[kinds[t]]
        self.forms = forms
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), self.init_log_var))
        self.register_buffer(
            "_coef",
            torch.tensor([_FORM_COEF[forms[t]] for t in self.task_names]),
            persistent=False,
        )

    def _learned_parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        idx = [i for i, t in enumerate(self.task_names) if t in losses]
        present = [self.task_names[i] for i in idx]
        stacked = torch.stack([losses[t].reshape(()) for t in present])
        index = self._index(idx, self.log_vars.device)
        s = self.log_vars.index_select(0, index)
        mult = self._coef.index_select(0, index) * torch.exp(-s)  # c_k·e^{−s_k}

        # Model gradient: Σ_k c_k e^{−s_k} L_k, multipliers held constant.
        backward_fn((mult.detach().to(stacked.dtype) * stacked).sum())

        # s gradient: d/ds_k [c_k e^{−s_k} L_k + ½ s_k] on the detached losses.
        # A task whose loss is exactly 0 had no labelled rows in the batch (the training module
        # returns 0·logits then); its ½s_k term alone would pull s_k down, so it sits this step out.
        lv = stacked.detach().to(mult.dtype)
        valid = (lv != 0).to(mult.dtype)
        self._step_learned((valid * (mult * lv + 0.5 * s)).sum())

    def weights(self) -> dict[str, float]:
        """Effective multiplier of each loss: ``e^{−s_k}`` (classification) or ``½e^{−s_k}``."""
        with torch.no_grad():
            mult = (self._coef * torch.exp(-self.log_vars)).tolist()
        return dict(zip(self.task_names, mult, strict=True))

    def weight_values(self, device: torch.device) -> Tensor:
        with torch.no_grad():
            return (self._coef * torch.exp(-self.log_vars)).to(device)

    def log_variances(self) -> dict[str, float]:
        """The learned ``s_k = log σ_k²``."""
        return dict(zip(self.task_names, self.log_vars.detach().tolist(), strict=True))

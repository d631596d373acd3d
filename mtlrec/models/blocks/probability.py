"""Products and ratios of probabilities, computed in logit space.

ESMM's pCTCVR is pCTR·pCVR *as probabilities*; multiplying logits instead (a known bug in some
libraries) trains a different model whose click AUC collapses. Working with ``log σ(a)`` keeps the
product exact and stable where a naive ``sigmoid(a) * sigmoid(b)`` underflows, and the result is
returned as a logit so the task's loss stays BCE-with-logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# log p is kept at or below log(1 - 2^-23): p = 1 exactly would be an infinite logit.
LOG_P_MAX = math.log1p(-(2.0**-23))
_LN_HALF = -math.log(2.0)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of ``-ln 2`` (Mächler 2012).

    Each branch gets an input it is finite on, so ``torch.where`` never routes a NaN gradient."""
    near = torch.where(x > _LN_HALF, x, torch.full_like(x, _LN_HALF))
    far = torch.where(x > _LN_HALF, torch.full_like(x, _LN_HALF), x)
    return torch.where(x > _LN_HALF, torch.log(-torch.expm1(near)), torch.log1p(-torch.exp(far)))


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """``logit(p) = log p − log(1 − p)`` from ``log p``."""
    log_p = log_p.clamp(max=LOG_P_MAX)
    return log_p - log1mexp(log_p)


def product_logit(*logits: Tensor) -> Tensor:
    """The logit of ``Π_i σ(l_i)`` (ESMM eq. 3: pCTCVR = pCTR × pCVR)."""
    return logit_from_log_prob(sum(F.logsigmoid(x) for x in logits))


def ratio_logit(numerator: Tensor, denominator: Tensor) -> Tensor:
    """The logit of ``min(σ(n) / σ(d), 1)``: a conditional probability from two chained ones
    (AITM's pCVR = p(click ∧ buy) / p(click), capped at 1 where the chain is not yet monotone)."""
    return logit_from_log_prob(F.logsigmoid(numerator) - F.logsigmoid(denominator))

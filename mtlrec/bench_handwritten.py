"""An independent hand-written MMoE training loop: the yardstick of ``python -m mtlrec.bench``.

Written for speed, and on purpose *without* mtlrec's model code, training module or loaders: the
same column tensors (mtlrec's preprocessing of the same split), then one embedding table, the
experts, gates and towers as stacked weights (one einsum / batched matmul each), one
``randperm`` gather per batch, binary cross-entropy on logits, fused Adam. What mtlrec adds on top of
this (Lightning, its modules, its hooks) is what the benchmark measures.

``--scatter-embedding``: the loop's embedding gradient as one ``index_add`` (its own few lines,
:class:`ScatterEmbedding`), the CPU trick mtlrec's categorical lookup uses, so the benchmark can
also show mtlrec beside a loop that has it.

    python -m mtlrec.bench_handwritten --root ../shared/data/census-income-kdd --threads 1
prints one JSON line: training seconds, samples/s, test AUC per task.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc


class ScatterEmbedding(torch.autograd.Function):
    """``table[ids]`` whose backward scatters the row gradients with ``index_add``, not
    ``embedding_dense_backward`` (a sort and a segment sum, slower on CPU for small tables)."""

    @staticmethod
    def forward(ctx, table: Tensor, ids: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = table.shape[0]
        return table[ids]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        return torch.zeros(ctx.rows, flat.shape[1], dtype=grad.dtype).index_add_(0, ids.flatten(), flat), None


class StackedMMoE(nn.Module):
    """Embeddings (one table, global ids) ‖ numerics → E ReLU experts → T softmax gates → T towers."""

    def __init__(self, vocabulary: int, fields: int, numerics: int, tasks: int, embedding: int = 4,
                 experts: int = 8, expert_units: int = 16, tower_units: int = 8, scatter_embedding: bool = False):
        super().__init__()
        self.scatter_embedding = scatter_embedding
        d = fields * embedding + numerics
        self.embedding = nn.Embedding(vocabulary, embedding)
        nn.init.normal_(self.embedding.weight, std=0.01)

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.expert_w = uniform(experts, d, expert_units, fan_in=d)
        self.expert_b = uniform(experts, expert_units, fan_in=d)
        self.gate_w, self.gate_b = uniform(d, tasks * experts, fan_in=d), uniform(tasks * experts, fan_in=d)
        self.tower_w = uniform(tasks, expert_units, tower_units, fan_in=expert_units)
        self.tower_b = uniform(tasks, 1, tower_units, fan_in=expert_units)
        self.head_w = uniform(tasks, tower_units, 1, fan_in=tower_units)
        self.head_b = uniform(tasks, 1, 1, fan_in=tower_units)
        self.tasks, self.experts = tasks, experts

    def forward(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        table = self.embedding.weight
        rows = ScatterEmbedding.apply(table, categorical) if self.scatter_embedding and torch.is_grad_enabled() \
            else self.embedding(categorical)
        x = torch.cat([rows.flatten(1), numeric], dim=1)  # [B, d]
        h = torch.relu(torch.einsum("bd,edu->beu", x, self.expert_w) + self.expert_b)  # [B, E, U]
        g = torch.softmax((x @ self.gate_w + self.gate_b).view(-1, self.tasks, self.experts), dim=-1)  # [B, T, E]
        mixed = (g.unsqueeze(-1) * h.unsqueeze(1)).sum(2).transpose(0, 1)  # [T, B, U]: broadcast, not a B-batch einsum
        t = torch.relu(torch.bmm(mixed, self.tower_w) + self.tower_b)  # [T, B, H]
        return (torch.bmm(t, self.head_w) + self.head_b).squeeze(-1).T  # [B, T] logits


def train(tables: dict, epochs: int, batch_size: int, lr: float, seed: int, **sizes) -> dict:
    torch.manual_seed(seed)
    train_t = tables["train"]
    tasks = list(train_t.labels)
    cat, num = train_t.features["categorical"], train_t.features["numeric"].float()
    labels = torch.stack([train_t.labels[t].float() for t in tasks], dim=1)
    vocabulary = int(max(t.features["categorical"].max() for t in tables.values())) + 1
    model = StackedMMoE(vocabulary, cat.shape[1], num.shape[1], len(tasks), **sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # the fastest Adam: one kernel per parameter
    n = len(train_t)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(0, n, batch_size):
            rows = order[i:i + batch_size]
            logits = model(cat[rows], num[rows])
            loss = F.binary_cross_entropy_with_logits(logits, labels[rows], reduction="none").mean(0).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    test = tables["test"]
    with torch.no_grad():
        scores = model(test.features["categorical"], test.features["numeric"].float())
    auc = {t: float(binary_auroc(scores[:, k], test.labels[t].long())) for k, t in enumerate(tasks)}
    return {"train_seconds": seconds, "samples_per_second": n * epochs / seconds, "test_auc": auc}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scatter-embedding", action="store_true", help="the embedding gradient as one index_add")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hydra import compose, initialize_config_dir

    from mtlrec.build import build_datamodule
    from mtlrec.train import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):  # only to read the same column tensors
        cfg = compose("config", overrides=["data=census_income", f"data.root={args.root}", "data.group=1"])
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    result = train(datamodule.tables, args.epochs, args.batch_size, 1e-3, args.seed,
                   scatter_embedding=args.scatter_embedding)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

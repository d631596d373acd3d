"""``mtlrec-transfer-probe``: which source domain is worth transferring from, before training.

    mtlrec-transfer-probe --target "experiment=retail_transfer data.root=..." \\
        --source tops="experiment=retail_transfer data.root=... data.domain.source=[Tops] data.domain.rows=source \\
                       data.domain.labelled=null" \\
        --source dresses="... data.domain.source=[Dresses] ..."

Each domain is a set of Hydra overrides composing its ``data`` config. For each source the table
gives three things a transfer decision weighs:

* **data volume**: the source's training rows;
* **label distance**: per task the source shares with the target (same name and kind), the total
  variation distance between the two training label distributions (binary: |p_s − p_t|;
  multiclass: ½ Σ_c |p_s(c) − p_t(c)|, by class name);
* **proxy A-distance** (Ben-David et al. 2007; Ganin et al. 2016, §5): a linear classifier learns to
  tell source rows from target rows on the model's input representation (every domain transformed
  with the *target's* fitted preprocessing: standardised numerics, and categorical ids and tokens
  as one-hot weights); with ε its error on held-out rows, d_A = 2(1 − 2ε), from 0 (the classifier
  cannot tell them apart) to 2 (it always can).

Lower distances and more rows suggest a better source; the retail transfer experiment checks
whether this ranking predicts the measured gain.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlrec.data.table import TensorTable
from mtlrec.training.results import write_json_atomic

PROG = "mtlrec-transfer-probe"


class _Linear(nn.Module):
    """A logistic regression on one table's features: one weight per numeric field, per
    categorical id and per token (an embedding of width 1)."""

    def __init__(self, table: TensorTable, sizes: dict[str, int]):
        super().__init__()
        self.parts = nn.ModuleDict()
        for key, tensor in table.features.items():
            if tensor.dtype.is_floating_point:
                self.parts[key] = nn.Linear(int(tensor.reshape(len(tensor), -1).shape[1]), 1, bias=False)
            else:
                self.parts[key] = nn.EmbeddingBag(sizes[key], 1, mode="sum")
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.bias.expand(next(iter(features.values())).shape[0])
        for key, layer in self.parts.items():
            x = features[key]
            out = out + layer(x.reshape(len(x), -1)).reshape(-1)
        return out.reshape(-1)


def proxy_a_distance(source: TensorTable, target: TensorTable, max_rows: int = 20_000, epochs: int = 30,
                     seed: int = 0, min_steps: int = 400) -> float:
    """d_A = 2(1 − 2ε), ε the held-out error of a linear source-vs-target classifier (see the module).
    Both tables must come from one preprocessing. Each side is subsampled to the same number of
    rows (at most ``max_rows``), so a 50 % error means "indistinguishable" whatever the volumes."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(source), len(target), max_rows)
    if n < 20:
        raise ValueError(f"{PROG}: {n} rows on the smaller side; the proxy A-distance needs at least 20")
    picked = [table[torch.randperm(len(table), generator=generator)[:n]] for table in (source, target)]
    keys = list(target.features)
    features = {k: _pad_cat([b.features[k] for b in picked]) for k in keys}
    domain = torch.cat([torch.zeros(n), torch.ones(n)])
    order = torch.randperm(2 * n, generator=generator)
    half = n  # fit on one half of the pooled rows, measure on the other
    fit, held = order[:half], order[half:]
    sizes = {k: int(v.max()) + 1 for k, v in features.items() if not v.dtype.is_floating_point}
    torch.manual_seed(seed)
    model = _Linear(TensorTable({k: v[:1] for k, v in features.items()}, {}, num_rows=1), sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.BCEWithLogitsLoss()
    steps, epoch = 0, 0
    while epoch < epochs or steps < min_steps:  # small samples still get enough steps to converge
        for batch in torch.randperm(half, generator=generator).split(1024):
            rows = fit[batch]
            optimizer.zero_grad()
            loss_fn(model({k: v[rows] for k, v in features.items()}), domain[rows]).backward()
            optimizer.step()
            steps += 1
        epoch += 1
    with torch.no_grad():
        predicted = model({k: v[held] for k, v in features.items()}) > 0
    error = float((predicted.float() != domain[held]).float().mean())
    return max(0.0, min(2.0, 2 * (1 - 2 * error)))


def _pad_cat(tensors: list[Tensor]) -> Tensor:
    """Concatenate rows; token matrices of different widths are padded with id 0 (padding)."""
    if tensors[0].dim() == 2 and not tensors[0].dtype.is_floating_point:
        width = max(t.shape[1] for t in tensors)
        tensors = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors]
    return torch.cat(tensors)


def label_distances(source, target) -> dict[str, float]:
    """Task -> total variation distance of the training labels, for the tasks both share."""
    out = {}
    source_tasks = {t.name: t for t in source.schema.tasks}
    for task in target.schema.tasks:
        other = source_tasks.get(task.name)
        if other is None or other.kind != task.kind or task.kind not in ("binary", "multiclass"):
            continue
        p, q = _distribution(target, task), _distribution(source, other)
        out[task.name] = 0.5 * sum(abs(p.get(c, 0.0) - q.get(c, 0.0)) for c in set(p) | set(q))
    return out


def _distribution(datamodule, task) -> dict[str, float]:
    table = datamodule.tables["train"]
    labels = table.labels[task.name]
    if task.name in table.masks:
        labels = labels[table.masks[task.name]]
    if task.kind == "binary":
        positive = float(labels.float().mean()) if len(labels) else 0.0
        return {"1": positive, "0": 1 - positive}
    names = list(task.classes) if task.classes else [str(i) for i in range(task.num_classes)]
    counts = torch.bincount(labels.long(), minlength=len(names)).float()
    return {names[i]: float(c / counts.sum()) for i, c in enumerate(counts)}


def probe(target_overrides: Sequence[str], sources: dict[str, Sequence[str]], max_rows: int = 20_000,
          seed: int = 0) -> list[dict[str, Any]]:
    """One row per source (see the module)."""
    from mtlrec.bench_weightings import compose_config
    from mtlrec.build import build_datamodule

    target = build_datamodule(compose_config(list(target_overrides)))
    pre = target.preprocessor
    rows = []
    for name, overrides in sources.items():
        source = build_datamodule(compose_config(list(overrides)))
        as_target = pre.transform(source.raw.splits["train"], split=source.raw.where("train"), with_labels=False)
        distances = label_distances(source, target)
        rows.append({
            "source": name, "train_rows": len(source.tables["train"]),
            "label_distance": distances,
            "mean_label_distance": sum(distances.values()) / len(distances) if distances else float("nan"),
            "proxy_a_distance": proxy_a_distance(as_target, target.tables["train"], max_rows, seed=seed),
        })
    return rows


def markdown(rows: list[dict[str, Any]], target_rows: int | None = None) -> str:
    tasks = sorted({t for r in rows for t in r["label_distance"]})
    head = ["source", "train rows", *[f"label TV {t}" for t in tasks], "proxy A-distance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["proxy_a_distance"]):
        distances = [f"{r['label_distance'].get(t, float('nan')):.3f}" for t in tasks]
        cells = [r["source"], f"{r['train_rows']:,}", *distances, f"{r['proxy_a_distance']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _source(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name or "=" not in overrides:
        raise argparse.ArgumentTypeError(f"--source {text!r}: write NAME=\"<data overrides>\", e.g. "
                                         f"tops=\"data=womens_reviews data.root=...\"")
    return name, shlex.split(overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help='the target domain\'s overrides, e.g. "data=... data.root=..."')
    parser.add_argument("--source", action="append", type=_source, required=True, metavar='NAME="OVERRIDES"')
    parser.add_argument("--max-rows", type=int, default=20_000, help="rows per side for the A-distance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON (for mtlrec.transfer.gains)")
    args = parser.parse_args(argv)
    try:
        rows = probe(shlex.split(args.target), dict(args.source), args.max_rows, args.seed)
    except (ValueError, FileNotFoundError) as err:  # bad data or overrides: one line, as mtlrec-train
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(markdown(rows))
    if args.json:
        write_json_atomic(args.json, rows)
    return 0


def cli() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    cli()

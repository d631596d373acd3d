"""GradNorm paper §4 toy experiment (Chen et al., ICML 2018), with mtlrec's weighting classes.

Two regression tasks f_i(x) = σ_i·tanh((B + ε_i)·x), σ = (1, 100), x ∈ R^250, f_i(x) ∈ R^100;
a 4-layer 100-unit ReLU trunk with one affine head per task; equal weights vs uncertainty weighting
vs GradNorm (α = 0.12), every method from the same initial network and the same batch order per
seed. See README.md for the protocol and RESULTS.md for the outcome.

    python experiments/gradnorm_toy/run.py --seeds 5 --out experiments/gradnorm_toy
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn

from mtlrec.training.results import git_commit
from mtlrec.weighting.base import SharedModel, Weighting
from mtlrec.weighting.fixed import FixedWeighting
from mtlrec.weighting.gradnorm import GradNormWeighting
from mtlrec.weighting.uncertainty import UncertaintyWeighting

TASKS = ["t0", "t1"]  # t0: σ = 1 (small scale), t1: σ = 100 (large scale)
SIGMAS = {"t0": 1.0, "t1": 100.0}
IN_DIM, OUT_DIM, HIDDEN, DEPTH = 250, 100, 100, 4
B_VAR, EPS_VAR = 10.0, 3.5  # N(0, 10), N(0, 3.5) read as variances (see README)
ALPHA = 0.12

METHODS = {
    "equal": lambda: FixedWeighting(),
    "uncertainty": lambda: UncertaintyWeighting(),  # regression form ½e^{−s}L + ½s, Adam lr 1e-2
    "gradnorm": lambda: GradNormWeighting(alpha=ALPHA),  # Adam lr 0.025 on the weights
}

PAPER = {
    "setup": "Chen et al. 2018, §4 and Fig. 2 (T = 2, σ = (1, 100), α = 0.12)",
    "claims": [
        "with equal weights the large-scale task (σ = 100) suppresses the small-scale one",
        "GradNorm raises the small-scale task's weight w_0(t) above 1 to counter task 1's larger gradients",
        "GradNorm reaches a lower task-normalised test loss Σ_i L_i(t)/L_i(0) than equal weighting",
        "GradNorm is more stable and beats uncertainty weighting, whose weights grow too large too "
        "quickly, so training deteriorates after a fast start",
    ],
}


# --------------------------------------------------------------------------------------------
def make_data(seed: int, n_train: int, n_test: int):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(OUT_DIM, IN_DIM, generator=g) * math.sqrt(B_VAR)
    eps = {t: torch.randn(OUT_DIM, IN_DIM, generator=g) * math.sqrt(EPS_VAR) for t in TASKS}

    def sample(n):
        x = torch.randn(n, IN_DIM, generator=g)  # x ~ N(0, I_250)
        return x, {t: SIGMAS[t] * torch.tanh(x @ (B + eps[t]).T) for t in TASKS}

    return sample(n_train), sample(n_test)


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, d = [], IN_DIM
        for _ in range(DEPTH):
            layers += [nn.Linear(d, HIDDEN), nn.ReLU()]
            d = HIDDEN
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t: nn.Linear(HIDDEN, OUT_DIM) for t in TASKS})

    def forward(self, x):
        h = self.trunk(x)
        return {t: self.heads[t](h) for t in TASKS}

    def shared_model(self) -> SharedModel:
        return SharedModel(
            shared_parameters=list(self.trunk.parameters()),
            last_shared_parameters=[self.trunk[2 * DEPTH - 2].weight],  # W of the last shared layer
            task_parameters=[p for t in TASKS for p in self.heads[t].parameters()],
        )


def task_losses(net, x, ys):
    out = net(x)
    return {t: ((out[t] - ys[t]) ** 2).mean() for t in TASKS}


@torch.no_grad()
def eval_losses(net, x, ys):
    return {t: float(v) for t, v in task_losses(net, x, ys).items()}


def run_one(args: tuple) -> dict:
    seed, method, cfg = args
    torch.set_num_threads(1)
    (xtr, ytr), (xte, yte) = make_data(seed, cfg["n_train"], cfg["n_test"])
    torch.manual_seed(10_000 + seed)  # same initial network for every method
    net = ToyNet()
    # "single:<task>": the reference network trained on that task alone (same protocol)
    only = method.split(":", 1)[1] if method.startswith("single:") else None
    weighting: Weighting = FixedWeighting() if only else METHODS[method]()
    weighting.setup(TASKS, net.shared_model(), {t: cfg["n_train"] for t in TASKS},
                    task_kinds={t: "regression" for t in TASKS})
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    order = torch.Generator().manual_seed(20_000 + seed)  # same batch order for every method

    init_tr, init_te = eval_losses(net, xtr, ytr), eval_losses(net, xte, yte)
    curve = []

    def record(step):
        tr, te = eval_losses(net, xtr, ytr), eval_losses(net, xte, yte)
        curve.append({
            "step": step,
            "train": {t: tr[t] / init_tr[t] for t in TASKS},
            "test": {t: te[t] / init_te[t] for t in TASKS},
            "weights": weighting.weights(),
        })

    record(0)
    start = time.process_time()
    steps, bs = cfg["steps"], cfg["batch_size"]
    perm, pos = torch.randperm(cfg["n_train"], generator=order), 0
    for step in range(1, steps + 1):
        if pos + bs > cfg["n_train"]:
            perm, pos = torch.randperm(cfg["n_train"], generator=order), 0
        idx = perm[pos:pos + bs]
        pos += bs
        losses = task_losses(net, xtr[idx], {t: ytr[t][idx] for t in TASKS})
        if only:
            losses = {only: losses[only]}
        opt.zero_grad(set_to_none=True)
        weighting.backward(losses, lambda loss, **kwargs: loss.backward(**kwargs))
        opt.step()
        if step % cfg["eval_every"] == 0 or step == steps:
            record(step)
    with torch.no_grad():
        trunk_rms = float(net.trunk(xte).pow(2).mean().sqrt())
    extra = {}
    if isinstance(weighting, UncertaintyWeighting):
        final_tr = eval_losses(net, xtr, ytr)
        extra = {"log_var": weighting.log_variances(), "log_train_loss": {t: math.log(v) for t, v in final_tr.items()}}
    return {"seed": seed, "method": method, "curve": curve, "cpu_seconds": time.process_time() - start,
            "trunk_rms": trunk_rms, **extra,
            "finite": all(math.isfinite(v) for c in curve for s in ("train", "test") for v in c[s].values())}


# --------------------------------------------------------------------------------------------
def _ms(vals):
    vals = list(vals)
    m = statistics.fmean(vals)
    s = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return m, s


def _fmt(vals, digits=3):
    m, s = _ms(vals)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def summarise(runs: list[dict], cfg: dict) -> tuple[str, dict]:
    refs = [r for r in runs if r["method"].startswith("single:")]
    runs = [r for r in runs if not r["method"].startswith("single:")]
    by = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    methods = list(METHODS)

    def final(m, s):
        return by[(m, s)]["curve"][-1]

    def tot(c, split):
        return sum(c[split].values())

    lines = [
        "# GradNorm toy experiment — results",
        "",
        "Generated by `python experiments/gradnorm_toy/run.py "
        f"--seeds {len(seeds)} --out experiments/gradnorm_toy` (protocol: README.md). "
        f"Seeds {seeds}; {cfg['steps']} steps of batch {cfg['batch_size']} "
        f"(Adam, lr {cfg['lr']}) on {cfg['n_train']} training and {cfg['n_test']} held-out samples; "
        "every method starts from the same network and sees the same batches for a given seed.",
        f"Code: commit `{cfg.get('git_commit')}`.",
        "",
        "Loss ratios are L_i(t)/L_i(0) on the full training set and on the held-out set, with L_i(0) "
        "the untrained network's loss on that set. Task 0 has σ = 1, task 1 has σ = 100. "
        "Mean ± sample std over seeds, at the end of training.",
        "",
        "## Final loss ratios and weights",
        "",
        "| method | train L0/L0(0) | train L1/L1(0) | train Σ | held-out L0/L0(0) | held-out L1/L1(0) "
        "| held-out Σ | final w_0 | final w_1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        f = [final(m, s) for s in seeds]
        lines.append(
            f"| {m} | {_fmt(c['train']['t0'] for c in f)} | {_fmt(c['train']['t1'] for c in f)} "
            f"| {_fmt(tot(c, 'train') for c in f)} | {_fmt(c['test']['t0'] for c in f)} "
            f"| {_fmt(c['test']['t1'] for c in f)} | {_fmt(tot(c, 'test') for c in f)} "
            f"| {_fmt((c['weights']['t0'] for c in f), 4)} | {_fmt((c['weights']['t1'] for c in f), 4)} |"
        )
    lines += [
        "",
        "Weights are the multipliers each method applies to L_i: 1 for equal weighting, "
        "½e^{−s_i} for uncertainty weighting (regression form; ½ at the start), w_i with Σ w_i = 2 "
        "for GradNorm.",
        "",
        "## Held-out Σ_i L_i(t)/L_i(0) per seed",
        "",
        "| seed | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{tot(final(m, s), 'test'):.4f}" for m in methods) + " |")

    # trajectory (mean over seeds) at a few points
    steps = [c["step"] for c in by[(methods[0], seeds[0])]["curve"]]
    picks = sorted({steps[0], *[steps[round(k * (len(steps) - 1) / 8)] for k in range(1, 9)]})
    lines += [
        "",
        "## Trajectories (mean over seeds)",
        "",
        "Held-out Σ_i L_i(t)/L_i(0) and the small-scale task's weight w_0(t):",
        "",
        "| step | " + " | ".join(f"{m} Σ" for m in methods) + " | " + " | ".join(f"{m} w_0" for m in methods) + " |",
        "|---|" + "---|" * (2 * len(methods)),
    ]
    for st in picks:
        k = steps.index(st)
        sums = [statistics.fmean(tot(by[(m, s)]["curve"][k], "test") for s in seeds) for m in methods]
        w0 = [statistics.fmean(by[(m, s)]["curve"][k]["weights"]["t0"] for s in seeds) for m in methods]
        lines.append(f"| {st} | " + " | ".join(f"{v:.4f}" for v in sums) + " | "
                     + " | ".join(f"{v:.4f}" for v in w0) + " |")

    # the paper's claims, checked
    fin = {m: {s: final(m, s) for s in seeds} for m in methods}
    gn_w0 = [fin["gradnorm"][s]["weights"]["t0"] for s in seeds]
    max_w0 = [max(c["weights"]["t0"] for c in by[("gradnorm", s)]["curve"]) for s in seeds]
    n = len(seeds)
    beats_eq = sum(tot(fin["gradnorm"][s], "test") < tot(fin["equal"][s], "test") for s in seeds)
    beats_unc = sum(tot(fin["gradnorm"][s], "test") < tot(fin["uncertainty"][s], "test") for s in seeds)
    beats_eq_tr = sum(tot(fin["gradnorm"][s], "train") < tot(fin["equal"][s], "train") for s in seeds)
    beats_unc_tr = sum(tot(fin["gradnorm"][s], "train") < tot(fin["uncertainty"][s], "train") for s in seeds)
    eq_t0 = _ms(fin["equal"][s]["test"]["t0"] for s in seeds)[0]
    eq_t1 = _ms(fin["equal"][s]["test"]["t1"] for s in seeds)[0]
    unc_best = []
    for s in seeds:
        sums = [tot(c, "test") for c in by[("uncertainty", s)]["curve"]]
        unc_best.append((min(sums), sums[-1]))
    deteriorated = sum(last > 1.05 * best for best, last in unc_best)
    lines += [
        "",
        "## The paper's claims beside this run",
        "",
        f"Paper: {PAPER['setup']}. Verdicts are computed from the numbers above, not written by hand.",
        "",
        "| paper's claim | observed here |",
        "|---|---|",
        f"| {PAPER['claims'][0]} | equal weights: held-out ratio task 0 {eq_t0:.3f} vs task 1 {eq_t1:.3f} "
        f"(mean) — task 0 is {'behind' if eq_t0 > eq_t1 else 'not behind'} task 1 |",
        f"| {PAPER['claims'][1]} | final GradNorm w_0 = {_fmt(gn_w0, 4)}; w_0 > 1 at the end in "
        f"{sum(w > 1 for w in gn_w0)}/{n} seeds (peak w_0 mean {statistics.fmean(max_w0):.4f}) |",
        f"| {PAPER['claims'][2]} | GradNorm lower in {beats_eq}/{n} seeds held-out "
        f"({beats_eq_tr}/{n} on training data); mean held-out Σ {_fmt(tot(fin['gradnorm'][s], 'test') for s in seeds)} "
        f"vs {_fmt(tot(fin['equal'][s], 'test') for s in seeds)} |",
        f"| {PAPER['claims'][3]} | GradNorm lower in {beats_unc}/{n} seeds held-out "
        f"({beats_unc_tr}/{n} on training data); uncertainty's final held-out Σ exceeds its own best "
        f"by > 5% in {deteriorated}/{n} seeds |",
        "",
        "## Diagnostics",
        "",
        "Feature scale: RMS of the trunk's output on the held-out set at the end of training "
        "(mean over seeds): " + ", ".join(
            f"{m} {statistics.fmean(by[(m, s)]['trunk_rms'] for s in seeds):.1f}" for m in methods
        ) + ".",
        "",
    ]
    if refs:
        ref_seeds = sorted({r["seed"] for r in refs})
        lines += [
            f"Single-task reference (each task trained alone, same protocol and initial network; "
            f"seeds {ref_seeds}), held-out L_i(t)/L_i(0) of the trained task and trunk RMS:",
            "",
            "| trained task | held-out L_i/L_i(0) | trunk RMS |",
            "|---|---|---|",
        ]
        for t in TASKS:
            rr = [r for r in refs if r["method"] == f"single:{t}"]
            lines.append(
                f"| {t} (σ = {SIGMAS[t]:g}) | {_fmt(r['curve'][-1]['test'][t] for r in rr)} "
                f"| {statistics.fmean(r['trunk_rms'] for r in rr):.1f} |"
            )
        lines.append("")
    unc = [by[("uncertainty", s)] for s in seeds]
    lines += [
        "Uncertainty weighting, end of training (mean over seeds): learned s_i = log σ_i² vs "
        "log L_i on the training set (the optimum of ½e^{−s}L + ½s is s = log L): " + "; ".join(
            f"{t}: s = {statistics.fmean(r['log_var'][t] for r in unc):.2f}, "
            f"log L = {statistics.fmean(r['log_train_loss'][t] for r in unc):.2f}" for t in TASKS
        ) + ".",
        "",
        f"CPU time of the training loops: {sum(r['cpu_seconds'] for r in runs + refs):.0f} s in all "
        f"(per run: " + ", ".join(
            f"{m} {statistics.fmean(by[(m, s)]['cpu_seconds'] for s in seeds):.1f} s" for m in methods
        ) + "). All losses finite: " + ("yes" if all(r["finite"] for r in runs) else "NO") + ".",
        "",
    ]
    data = {"config": cfg, "paper": PAPER, "runs": runs, "single_task_reference": refs}
    return "\n".join(lines), data


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reference-seeds", type=int, default=1,
                    help="also train each task alone for the first K seeds (diagnostic)")
    a = ap.parse_args(argv)
    cfg = {"steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "n_train": a.n_train,
           "n_test": a.n_test, "eval_every": a.eval_every, "alpha": ALPHA,
           "sigmas": SIGMAS, "B_var": B_VAR, "eps_var": EPS_VAR, "git_commit": git_commit()}
    jobs = [(s, m, cfg) for s in range(a.seeds) for m in METHODS]
    jobs += [(s, f"single:{t}", cfg) for s in range(min(a.reference_seeds, a.seeds)) for t in TASKS]
    t0 = time.time()
    if a.workers > 1:
        with ProcessPoolExecutor(max_workers=a.workers) as ex:
            runs = list(ex.map(run_one, jobs))
    else:
        runs = [run_one(j) for j in jobs]
    text, data = summarise(runs, cfg)
    atomic_write(a.out / "RESULTS.md", text)
    atomic_write(a.out / "results.json", json.dumps(data, indent=1))
    print(text)
    print(f"wall time {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

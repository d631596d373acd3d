"""The benchmark runs (both sides, the ratio table) on a dataset with text features, so it cannot
rot when the input side changes. Its figures are not checked here: they need a quiet machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_prints_both_sides_and_their_ratio() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.bench_weightings", "--data", "womens_reviews", "--root",
         "tests/fixtures/womens_reviews",
         "--epochs", "2", "--repeats", "1", "--weightings", "fixed,gradnorm"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "mmoe on womens_reviews: 318 training rows" in out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith(("bare", "mtlrec"))}
    assert set(rows) == {"bare PyTorch loop", "bare loop + GradNorm's floor", "mtlrec weighting=fixed",
                         "mtlrec weighting=gradnorm"}
    assert rows["bare PyTorch loop"][-2] == "1.00"  # × bare of the bare loop itself
    assert "GradNorm's floor (the bare loop + T - 1 gradients on the last shared layer):" in out


def test_image_bench_prints_cold_and_warm_runs_and_the_epoch_ratio() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.bench_images", "--root", "tests/fixtures/grocery", "--input-size", "32",
         "--epochs", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "feature extraction: 48 images at" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("cold", "warm"))}
    assert set(rows) == {"cold", "warm"} and rows["warm"][-2] == "1.00"
    assert "first epoch of a cold run (extraction + epoch)" in out


def test_out_of_core_bench_prints_conversion_rss_and_rows_per_second(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.bench_outofcore", "--work", str(tmp_path), "--rows", "30000",
         "--memory-rows", "10000", "--eval-rows", "20000", "--batch-size", "1024"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "conversion of 30,000 training rows" in out and "peak RSS" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("esmm", "mmoe"))]
    assert [(r[0], r[1]) for r in rows] == [("esmm", "memory-mapped"), ("esmm", "in-memory"), ("mmoe", "memory-mapped"),
                                            ("mmoe", "in-memory")]
    assert all(r[-1] == "1.00" for r in rows if r[1] == "in-memory")


def test_systems_bench_runs_mtlrec_and_the_hand_written_loop_side_by_side() -> None:
    proc = subprocess.run(
        # compile=true's own path is tests/training/test_compile.py (compiling here would cost CI ~20 s)
        [sys.executable, "-m", "mtlrec.bench", "--root", "tests/fixtures/census", "--threads", "1", "--repeats", "1",
         "--epochs", "1", "--mixed-precision",
         "--skip", "mtlrec-train compile=true,mtlrec-train compile=true bf16-mixed"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[1]: line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| 1 |")}
    assert set(rows) == {"hand-written loop", "hand-written loop, index_add embedding backward", "mtlrec-train",
                         "mtlrec-train bf16-mixed"}
    assert rows["hand-written loop"][3] == "1.00"  # the yardstick's own ratio
    assert float(rows["mtlrec-train"][3]) > 0 and float(rows["mtlrec-train"][4].replace(",", "")) > 100  # RSS MiB
    assert "| – | DeepCTR-Torch |" in proc.stdout


def test_scaling_bench_runs_one_and_two_processes_side_by_side() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.bench_scaling", "--root", "tests/fixtures/census", "--repeats", "1",
         "--epochs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in proc.stdout.splitlines()
            if line.startswith("| 1 process") or line.startswith("| 2 processes")}
    assert set(rows) == {"1 process × 1 thread", "1 process × 2 threads", "2 processes × 1 thread (DDP)"}
    assert rows["1 process × 1 thread"][2] == "1.00"  # the yardstick's own ratio
    assert float(rows["2 processes × 1 thread (DDP)"][1].replace(",", "")) > 0


def test_seeds_bench_runs_one_seed_separate_runs_and_the_stack_side_by_side() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.bench_seeds", "--root", "tests/fixtures/census", "--seeds", "2", "--epochs", "1",
         "--repeats", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in proc.stdout.splitlines()
            if line.startswith("| ") and ("seed" in line or "runs" in line)}
    assert set(rows) >= {"one seed", "2 runs of their own", "2 seeds stacked (seeds=2)"}
    assert rows["one seed"][2] == "1.00"  # the yardstick's own ratio
    # the stack's seeds are the separate runs' seeds: the same mean AUC to float noise
    stacked, separate = (float(rows[k][6].rstrip(" |")) for k in ("2 seeds stacked (seeds=2)", "2 runs of their own"))
    assert abs(stacked - separate) < 2e-3
    assert "stacked / separate: wall" in proc.stdout


def test_the_loops_index_add_embedding_has_nn_embeddings_gradient() -> None:
    import torch

    from mtlrec.bench_handwritten import ScatterEmbedding

    torch.manual_seed(0)
    table, ids, upstream = torch.randn(9, 4, requires_grad=True), torch.randint(0, 9, (32, 6)), torch.randn(32, 6, 4)
    (ours,) = torch.autograd.grad((ScatterEmbedding.apply(table, ids) * upstream).sum(), table)
    (reference,) = torch.autograd.grad((torch.nn.functional.embedding(ids, table) * upstream).sum(), table)
    torch.testing.assert_close(ours, reference)

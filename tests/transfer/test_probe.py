"""The domain-similarity probe: the proxy A-distance is ≈ 0 for two samples of one distribution
and ≈ 2 for disjoint ones; label distances are total variation by class; the command prints one
row per source, the closest first."""

from __future__ import annotations

import torch

from mtlrec.data.table import TensorTable
from mtlrec.transfer.probe import main, proxy_a_distance
from tests.transfer.test_init_from import _domain


def _table(n: int, shift: float = 0.0, ids: tuple[int, int] = (0, 50), seed: int = 0) -> TensorTable:
    g = torch.Generator().manual_seed(seed)
    return TensorTable({"numeric": torch.randn(n, 3, generator=g) + shift,
                        "categorical": torch.randint(*ids, (n, 2), generator=g)}, {}, num_rows=n)


def test_two_samples_of_one_distribution_are_about_0_apart() -> None:
    assert proxy_a_distance(_table(3000, seed=1), _table(3000, seed=2)) < 0.15


def test_disjoint_domains_are_about_2_apart() -> None:
    assert proxy_a_distance(_table(2000, seed=1), _table(2000, shift=8.0, seed=2)) > 1.9
    assert proxy_a_distance(_table(2000, ids=(0, 50), seed=1), _table(2000, ids=(50, 100), seed=2)) > 1.9


def test_the_command_ranks_a_near_source_before_a_far_one(tmp_path, capsys) -> None:
    target = _domain(tmp_path / "target", ["a", "b", "c"], seed=0)
    near = _domain(tmp_path / "near", ["a", "b", "c"], seed=1)
    far = _domain(tmp_path / "far", ["x", "y"], seed=2)

    def spec(overrides):
        return " ".join(f"'{o}'" for o in overrides if o.startswith("data."))

    code = main(["--target", f"data=tabular {spec(target)}", "--source", f"near=data=tabular {spec(near)}",
                 "--source", f"far=data=tabular {spec(far)}", "--max-rows", "500"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0].startswith("| source | train rows | label TV buy | label TV click | proxy A-distance |")
    rows = {line.split("|")[1].strip(): line for line in out[2:]}
    assert list(rows) == ["near", "far"]  # closest first
    assert float(rows["far"].split("|")[-2]) > 1.5 > float(rows["near"].split("|")[-2])

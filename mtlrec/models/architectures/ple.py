"""PLE and CGC (Tang et al., RecSys 2020): task-specific and shared experts, progressively separated."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.gate import Gate, gate_bank, mix
from mtlrec.models.inputs.encoder import InputEncoder


class ExtractionLevel(nn.Module):
    """One extraction network (PLE §4.3, eq. 3–6); a single level with no shared gate is CGC.

    Task k's gate mixes its own experts with the shared experts, reading task k's input. Unless
    this is the last level, a shared gate mixes *all* experts into the next level's shared input.
    All task experts run as one :class:`ExpertLayer` (grouped by task), shared experts as another.
    """

    def __init__(
        self,
        num_tasks: int,
        in_dim: int,
        specific_experts: int,
        shared_experts: int,
        expert_units: Sequence[int],
        last: bool,
        gate_temperature: float,
        dropout: float,
    ):
        super().__init__()
        self.num_tasks, self.specific = num_tasks, specific_experts
        self.task_experts = ExpertLayer(num_tasks * specific_experts, in_dim, expert_units, dropout)
        self.shared_experts = ExpertLayer(shared_experts, in_dim, expert_units, dropout)
        self.task_gates = nn.ModuleList(
            Gate(in_dim, specific_experts + shared_experts, gate_temperature) for _ in range(num_tasks)
        )
        self.shared_gate = None if last else Gate(in_dim, num_tasks * specific_experts + shared_experts, gate_temperature)
        self.output_dim = expert_units[-1]

    def forward(self, task_inputs: Tensor, shared_input: Tensor) -> tuple[Tensor, Tensor | None, list[Tensor], Tensor | None]:
        """``task_inputs``: [B, T, in] (or [B, in] when identical); returns next inputs and gate weights."""
        task_out = self.task_experts(task_inputs)  # [B, T·S, D]
        shared_out = self.shared_experts(shared_input)  # [B, H, D]
        own = self.num_tasks * self.specific
        # task k's gate weighs its own S experts then the H shared ones: every task at once, each
        # part mixed where it lies. Concatenating a [B, T, S + H, D] pool first cost a copy of
        # the shared experts per task, and under torch.compile a mixing kernel that made PLE's
        # Census step 1.4-1.8x longer (29 -> 17 ms, bf16, 1 thread).
        task_w = gate_bank(list(self.task_gates), task_inputs)  # [B, T, S + H]
        per_task = task_out.unflatten(1, (self.num_tasks, self.specific))  # [B, T, S, D]
        outputs = mix(per_task, task_w[..., : self.specific])
        outputs = outputs + mix(shared_out.unsqueeze(1), task_w[..., self.specific :])
        weights = list(task_w.unbind(1))
        next_shared, shared_w = None, None
        if self.shared_gate is not None:  # over every task's experts then the shared ones
            shared_w = self.shared_gate(shared_input)
            next_shared = mix(task_out, shared_w[:, :own]) + mix(shared_out, shared_w[:, own:])
        return outputs, next_shared, weights, shared_w


class PLE(Architecture):
    """Encoder → ``num_levels`` extraction levels → a tower per task. ``num_levels=1`` is CGC."""

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        num_levels: int = 2,
        specific_experts: int = 2,
        shared_experts: int = 2,
        expert_units: Sequence[int] = (16,),
        tower_units: Sequence[int] = (8,),
        gate_temperature: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        if num_levels < 1:
            raise ValueError(f"arch.num_levels must be >= 1, got {num_levels}")
        if specific_experts < 1 or shared_experts < 1:
            raise ValueError("arch.specific_experts and arch.shared_experts must be >= 1")
        self.encoder = encoder
        in_dim, levels = self.input_dim, []
        for i in range(num_levels):
            levels.append(
                ExtractionLevel(
                    len(self.task_names), in_dim, specific_experts, shared_experts, expert_units,
                    last=i == num_levels - 1, gate_temperature=gate_temperature, dropout=dropout,
                )
            )
            in_dim = levels[-1].output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = self.make_towers(in_dim, tower_units, dropout)

    def forward(self, batch: Batch) -> TaskOutputs:
        x = self.encoder(batch)
        task_inputs, shared_input, gates = x, x, {}
        for i, level in enumerate(self.levels):
            task_inputs, shared_input, weights, shared_w = level(task_inputs, shared_input)
            gates.update({f"level{i}/{t}": w for t, w in zip(self.task_names, weights)})
            if shared_w is not None:
                gates[f"level{i}/shared"] = shared_w
        logits = {t: self.towers[t](task_inputs[:, k]) for k, t in enumerate(self.task_names)}
        return self.outputs(logits, gates, features=x)

    def gate_expert_labels(self) -> dict[str, list[str]]:
        """Per level: task k's gate is over task k's experts then the shared ones (the order of
        :meth:`ExtractionLevel.forward`); the shared gate over every task's experts then the shared."""
        labels: dict[str, list[str]] = {}
        for i, level in enumerate(self.levels):
            shared = [f"level{i}/shared/{j}" for j in range(level.shared_experts.num_experts)]
            own = {t: [f"level{i}/{t}/{j}" for j in range(level.specific)] for t in self.task_names}
            labels.update({f"level{i}/{t}": [*own[t], *shared] for t in self.task_names})
            if level.shared_gate is not None:
                labels[f"level{i}/shared"] = [*(e for t in self.task_names for e in own[t]), *shared]
        return labels

    def task_specific_modules(self) -> list[nn.Module]:
        """Only what no other task's loss can reach.

        Task experts below the last level feed that level's shared gate, hence every task; a task
        gate at level l feeds level l+1's task experts, which are task-specific only if l+1 is
        the last level. So: the last level's task experts and the last two levels' task gates.
        """
        last = len(self.levels) - 1
        modules: list[nn.Module] = [self.levels[last].task_experts, self.towers]
        modules += [level.task_gates for i, level in enumerate(self.levels) if i >= last - 1]
        return modules

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return self.levels[-1].shared_experts.last_layer_parameters()

    def part_modules(self) -> dict[str, list[nn.Module]]:
        gates = [level.task_gates for level in self.levels]
        gates += [level.shared_gate for level in self.levels if level.shared_gate is not None]
        return {"gates": gates, "towers": [self.towers]}


class CGC(PLE):
    """Customized Gate Control: PLE with a single extraction level (PLE paper §4.2)."""

    def __init__(self, schema: Schema, encoder: InputEncoder, **kwargs):
        kwargs.pop("num_levels", None)
        super().__init__(schema, encoder, num_levels=1, **kwargs)

"""The run config's sections as pydantic models: every key with its type, bounds, default and
a docstring (the line of meaning that ``aimmerging docs`` puts in docs/configuration.md).

Every section forbids unknown keys, so a typo in a config is caught before any compute is
spent. Loading, ``--set`` overrides and error messages are in :mod:`aimmerging.config`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .data.registry import canonical_task_name
from .data.spec import TaskSpec, task_spec
from .errors import did_you_mean

METHOD_NAMES = (
    "aimmerging", "aimmerging_no_ls", "aimmerging_no_fs", "aimmerging_mgm", "aimmerging_ifm",
    "aimmerging_reference", "seq_lora", "replay", "ewc", "fixed_interval", "recurrent_kif",
    "single_task", "mtl", "inc_lora", "o_lora", "moe_lora", "single_merge",
)
#: PEFT's ``add_weighted_adapter`` combination types that keep the rank (``cat`` adds the ranks)
SINGLE_MERGE_COMBINATIONS = ("svd", "linear", "ties", "ties_svd", "dare_linear", "dare_ties",
                             "dare_linear_svd", "dare_ties_svd", "magnitude_prune",
                             "magnitude_prune_svd", "importance")


def _leaf_types(annotation) -> set:
    """The plain types an annotation admits: ``Optional[int]`` -> {int, NoneType}."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        out: set = set()
        for arg in typing.get_args(annotation):
            out |= _leaf_types(arg)
        return out
    if origin is Literal:
        return {type(a) for a in typing.get_args(annotation)}
    return {origin or annotation}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_type_juggling(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse what pydantic's lax mode would quietly convert: ``true`` for a number, ``"8"``
        for an integer. A string is still accepted for a float, because YAML 1.1 reads
        ``3e-4`` (no dot) as a string. ``mixed_precision: no`` (YAML's false) means "no"."""
        annotation = cls.model_fields[info.field_name].annotation
        kinds = _leaf_types(annotation)
        options = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
        if value is False and "no" in options:
            return "no"
        if isinstance(value, bool) and bool not in kinds and kinds & {int, float, str}:
            expected = f"one of {', '.join(map(str, options))}" if options else _kind_name(kinds)
            raise ValueError(f"expected {expected}, got {str(value).lower()}")
        words = [w for a in typing.get_args(annotation) if typing.get_origin(a) is Literal
                 for w in typing.get_args(a)]                # Union[Literal["auto"], bool]
        if bool in kinds and value is not None and not isinstance(value, bool) and value not in words:
            expected = " or ".join(["true", "false", *map(repr, words)])
            raise ValueError(f"expected {expected}, got {value!r}")
        if isinstance(value, str) and int in kinds and not kinds & {float, str}:
            raise ValueError(f"expected an integer, got the string {value!r}")
        return value


class DataConfig(_Section):
    """Which benchmark data, which tasks in which order, how many examples (docs/data.md)."""

    dir: Optional[str] = None
    """The benchmark folder (the AimMerging or O-LoRA CL_Benchmark layout, docs/data.md); a
    relative path counts from the current folder (`--data DIR` or `AIMMERGING_DATA` give the
    data root instead); null runs the built-in demo stream."""
    order: Optional[int] = None
    """A task order of the paper, 1-7 (table 12; docs/algorithm.md); ignored when `tasks` is set."""
    tasks: Optional[list[Union[str, TaskSpec]]] = Field(default=None, min_length=1)
    """The tasks in training order: names of `dir`'s tasks (or the demo's), and tasks given by
    their files (a mapping, the `data.tasks[].` keys below), mixed."""
    n_train: Optional[int] = Field(default=None, ge=1)
    """Training examples per task, drawn uniformly with the run's seed (null: all)."""
    n_test: Optional[int] = Field(default=None, ge=1)
    """Evaluation examples per task (test or dev), stratified by label for accuracy tasks
    (null: all)."""
    eval_all_tasks: bool = False
    """Evaluate every task after each stage, not only the tasks seen so far."""
    max_input_tokens: int = Field(default=512, ge=8)
    """Prompt length limit in tokens; a longer prompt is cut in the middle (its first half and
    last half of the budget kept, so that the instruction and the answer cue both survive)."""
    max_target_tokens: int = Field(default=64, ge=1)
    """Answer length limit in tokens for training (the answer is cut at the end)."""

    @model_validator(mode="before")
    @classmethod
    def _no_test_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "test_split" in data:
            raise ValueError("data.test_split is gone (it evaluated on the benchmark's dev files, "
                             "which overlap its test files): use eval.split: dev (records held "
                             "out from the train file) or eval.split: test")
        return data

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_entries(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for position, item in enumerate(value):
            if isinstance(item, dict):
                item = task_spec(item, position)
            elif not isinstance(item, (str, TaskSpec)) or (isinstance(item, str)
                                                            and not item.strip()):
                raise ValueError(f"data.tasks[{position}]: expected a task name or a mapping "
                                 f"{{name: ..., train: ..., ...}}, got {item!r}")
            out.append(item)
        seen: dict[str, int] = {}
        for position, item in enumerate(out):      # here, so the error names the config file
            key = (canonical_task_name(item) if isinstance(item, str) else item.name).lower()
            if key in seen:
                raise ValueError(f"data.tasks[{position}]: task {key!r} is also "
                                 f"data.tasks[{seen[key]}]; every task needs its own name")
            seen[key] = position
        return out


class ModelConfig(_Section):
    """Backbone and LoRA adapter (paper appendix D defaults)."""

    name: str = "tiny-llama"
    """A built-in name (tiny-llama, tiny-t5, smollm2-135m), a Hugging Face hub name or a
    local model folder."""
    lora_r: int = Field(default=8, ge=1)
    """LoRA rank r."""
    lora_alpha: float = Field(default=32, gt=0)
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the LoRA branch's input during training."""
    target_modules: Optional[list[str]] = None
    """Modules that get a LoRA adapter (null: q/v for T5, q_proj/v_proj otherwise)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower steps)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """The frozen backbone's weights (`auto`: the dtype its checkpoint was saved in); the LoRA
    adapter and the fusion stay in float32."""


class MethodConfig(_Section):
    """The continual-learning method and its hyperparameters (docs/algorithm.md; paper section 4)."""

    name: str = "aimmerging"
    """The method (docs/methods.md lists them)."""
    memory_ratio: float = Field(default=0.02, gt=0, le=1)
    """Replay memory per task as a share of its training examples (paper: 2%)."""
    memory_size: Optional[int] = Field(default=None, ge=1)
    """Replay memory per task in examples; overrides `memory_ratio` when set."""
    history_batch_size: Optional[int] = Field(default=2, ge=1)
    """The memory batch of the history loss, in examples (null: `train.batch_size`, the
    paper's reading)."""
    history_draw: Literal["step", "interval"] = "interval"
    """How that batch is drawn: `interval` draws one per merge interval and keeps it until the
    next merge, so the loss moves with the parameters alone; `step` draws a new one every step
    (the paper's reading)."""
    log_history_loss: bool = False
    """Also measure the history loss where the method needs none (for plots and comparisons)."""
    history_share_prefix: Union[Literal["auto"], bool] = "auto"
    """Run a memory batch's shared task prefixes once (`auto`: models of at least 50M
    parameters and memory batches of at least 6 rows)."""
    history_precision: Literal["auto", "model", "bfloat16"] = "auto"
    """Precision of the history-loss pass (`auto`: bfloat16 autocast for a float32 model of at
    least 50M parameters where bfloat16 is native and measured faster, else as the model runs;
    docs/performance.md)."""
    s_init: int = Field(default=8, ge=1)
    """S_init: the merge interval at the start of each task, in steps."""
    window: int = Field(default=3, ge=1)
    """L_w: the learning-signal window, in merges."""
    s_min: int = Field(default=2, ge=1)
    """S_min: the smallest merge interval, in steps."""
    s_max: int = Field(default=128, ge=1)
    """S_max: the largest merge interval, in steps."""
    gamma_forget: float = Field(default=2.0, gt=0)
    """gamma_forget: the forgetting threshold is this times the calibration's mean history loss."""
    f_max: int = Field(default=3, ge=1)
    """F_max: forgetting activations that force an early merge."""
    use_learning_signal: bool = True
    """false: the "-LS" ablation (S stays S_init, P_new = 0.5)."""
    use_forgetting_signal: bool = True
    """false: the "-FS" ablation (merge every S steps, P_past = 0.5)."""
    fixed_alphas: Optional[tuple[float, float]] = None
    """(alpha_new, alpha_past): fixed global fusion weights ("+MGM"), each in [0, 1]."""
    importance_fusion: bool = False
    """Element-wise importance weights instead of the global pair ("+IFM")."""
    skip_idle_rehearsal: bool = True
    """Skip the rehearsal of a merge with alpha_past = 0, whose result is discarded (the
    rehearsal AdamW then sees fewer steps); false runs every rehearsal."""
    variant: Literal["paper", "reference_code"] = "paper"
    """`paper` (docs/algorithm.md) or `reference_code`, the authors' released code's rules."""
    ewc_lambda: float = Field(default=5000.0, ge=0)
    """EWC: weight of the quadratic penalty."""
    ewc_fisher_batches: int = Field(default=8, ge=1)
    """EWC: batches used to estimate the Fisher information after each task."""
    ifm_beta: float = Field(default=0.85, ge=0, lt=1)
    """Recurrent-KIF / +IFM / single_merge by importance: EMA factor of the parameter
    sensitivity."""
    olora_lambda1: float = Field(default=0.5, ge=0)
    """O-LoRA (Wang et al. 2023): weight of the orthogonality loss sum |A_i A_t^T| between the
    new task's LoRA A and every earlier task's A (default of cmnfriend/O-LoRA's code)."""
    olora_lambda2: float = Field(default=0.0, ge=0)
    """O-LoRA: weight of the L2 norm of the new task's A and B (default of its code)."""
    moe_train_earlier_experts: bool = False
    """MoELoRA (Luo et al. 2024): false trains the new task's expert and the router, the
    earlier experts frozen; true keeps every expert seen so far training."""
    single_merge_weights: tuple[float, float] = (0.5, 0.5)
    """Single-round merging (paper figure 1(a)): the weights of (the adapter before the task,
    the adapter after it), merged after each task k >= 2 with PEFT's add_weighted_adapter."""
    single_merge_combination: Literal[SINGLE_MERGE_COMBINATIONS] = "svd"
    """PEFT's combination_type: `svd` sums the weighted LoRA products B·A and cuts the sum back
    to rank r (PEFT's default); `linear` and the plain ties/dare/magnitude_prune types combine
    A and B separately; the *_svd types prune the products. `importance` is not PEFT's: a
    TaSL-style element-wise merge weighted by each element's importance to the new task and
    to the earlier ones (EMA factor `ifm_beta`; `single_merge_weights` unused)."""
    single_merge_density: float = Field(default=0.2, gt=0, le=1)
    """The share of each task vector that TIES / DARE / magnitude pruning keep (PEFT's density;
    0.2: TIES-merging's top 20%, Yadav et al. 2023); unused by svd and linear."""
    single_merge_majority_sign: Literal["total", "frequency"] = "total"
    """TIES's sign election (PEFT's majority_sign_method): `total` sums the values,
    `frequency` counts them."""

    @model_validator(mode="after")
    def _check(self) -> "MethodConfig":
        if self.name not in METHOD_NAMES:
            raise ValueError(f"method.name: unknown method {self.name!r}"
                             f"{did_you_mean(self.name, METHOD_NAMES)}; known: {', '.join(METHOD_NAMES)}")
        if self.s_min > self.s_max:
            raise ValueError(f"method.s_min ({self.s_min}) > method.s_max ({self.s_max})")
        if not self.s_min <= self.s_init <= self.s_max:
            raise ValueError(f"method.s_init ({self.s_init}) outside [s_min, s_max]")
        if self.fixed_alphas is not None and not all(0 <= a <= 1 for a in self.fixed_alphas):
            raise ValueError("method.fixed_alphas must lie in [0, 1]")
        if not all(0 <= w <= 1 for w in self.single_merge_weights):
            raise ValueError("method.single_merge_weights must lie in [0, 1]")
        return self


class TrainConfig(_Section):
    """Optimisation (paper appendix D: AdamW, lr 3e-4, batch 8)."""

    epochs: int = Field(default=1, ge=1)
    """Epochs per task."""
    batch_size: int = Field(default=8, ge=1)
    """Examples per batch (per process); also the rehearsal's memory batch."""
    grad_accum: int = Field(default=1, ge=1)
    """Batches accumulated into one optimizer step."""
    lr: float = Field(default=3e-4, gt=0)
    """Peak learning rate of AdamW (linear warm-up, then linear decay to 0 within each task)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    """Share of each task's steps spent warming the learning rate up."""
    max_grad_norm: Optional[float] = Field(default=1.0, gt=0)
    """Gradient clipping by total 2-norm (null: no clipping)."""
    max_steps_per_task: Optional[int] = Field(default=None, ge=1)
    """Stop each task after this many optimizer steps (null: all epochs)."""
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    """Accelerate's mixed precision (`auto`: bf16, else fp16, on a GPU; none on a CPU)."""
    report_to: Optional[str] = None
    """An Accelerate tracker for the step signals, e.g. `tensorboard` (null: none)."""
    checkpoint_every: int = Field(default=0, ge=0)
    """Write a checkpoint every this many steps (0: only at the end of each task)."""
    share_prefix: bool = False
    """Training steps run each shared task prefix once (faster on instruction data; the prefix
    tokens' LoRA dropout mask is then shared by the rows of a group)."""

    @field_validator("report_to")
    @classmethod
    def _no_tracker_when_empty(cls, value: Optional[str]) -> Optional[str]:
        return value.strip() or None if isinstance(value, str) else value


class EvalConfig(_Section):
    """Evaluation after each task: batched greedy generation."""

    split: Literal["test", "dev"] = "test"
    """What each task is scored on: its test file, or dev records held out from its train file
    (a task's own dev file where it has one; docs/data.md). Choose settings on dev, report test."""
    batch_size: int = Field(default=16, ge=1)
    """Prompts per generation batch."""
    max_new_tokens: int = Field(default=16, ge=1)
    """Tokens generated per answer at most."""


class RunConfig(_Section):
    """A whole run: one task order, one method."""

    seed: int = 42
    """The run's seed: data samples, replay memory, batch order, LoRA initialisation."""
    single_task_scores: Optional[dict[str, float]] = None
    """a0 per task (percent), for FWT; `aimmerging compare` fills it from its single_task run."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def _kind_name(kinds: set) -> str:
    if int in kinds:
        return "an integer"
    if float in kinds:
        return "a number"
    if str in kinds:
        return "a string"
    return "another type"

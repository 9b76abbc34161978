"""Run configuration: YAML -> validated, typed settings (pydantic), with dotted overrides.

Every section forbids unknown keys, so a typo in a config is caught before any
compute is spent. Errors are raised as :class:`~aimmerging.errors.ConfigError`
with one line naming the key.
"""

from __future__ import annotations

from pathlib import Path
import types
import typing
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .errors import ConfigError

METHOD_NAMES = (
    "aimmerging", "aimmerging_no_ls", "aimmerging_no_fs", "aimmerging_mgm", "aimmerging_ifm",
    "aimmerging_reference", "seq_lora", "replay", "ewc", "fixed_interval", "recurrent_kif",
    "single_task", "mtl",
)


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
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

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
    """Which benchmark data, which tasks in which order, how many examples."""

    dir: Optional[str] = None            # benchmark folder (AimMerging or O-LoRA layout); None = demo stream
    order: Optional[int] = None          # paper order 1..7 (SPEC.md); ignored when `tasks` is set
    tasks: Optional[list[str]] = Field(default=None, min_length=1)   # explicit task order
    n_train: Optional[int] = Field(default=None, ge=1)   # examples per task (None = all)
    n_test: Optional[int] = Field(default=None, ge=1)
    test_split: Literal["test", "dev"] = "test"
    eval_all_tasks: bool = False         # evaluate every task after each stage (not only those seen)
    max_input_tokens: int = Field(default=512, ge=8)
    max_target_tokens: int = Field(default=64, ge=1)


class ModelConfig(_Section):
    """Backbone and LoRA adapter (paper appendix D defaults)."""

    name: str = "tiny-llama"             # built-in name, hub name or local folder
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: float = Field(default=32, gt=0)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: Optional[list[str]] = None   # None: q/v for T5, q_proj/v_proj otherwise
    gradient_checkpointing: bool = False
    # the frozen backbone's weights ("auto": the dtype its checkpoint was saved in); the LoRA
    # adapter stays in float32 (PEFT), as does the fusion
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"


class MethodConfig(_Section):
    """The continual-learning method and its hyperparameters (SPEC.md, paper section 4)."""

    name: str = "aimmerging"
    memory_ratio: float = Field(default=0.02, gt=0, le=1)
    memory_size: Optional[int] = Field(default=None, ge=1)   # per task; overrides memory_ratio
    # the memory batch of the history loss and how it is drawn (monitoring.py): "interval"
    # draws one per merge interval and keeps it until the next merge, so that the loss moves
    # with the parameters alone; "step" draws a new one every step (the paper's reading).
    # None = train.batch_size. The paper's per-step batch of 8 costs a third of a step here
    history_batch_size: Optional[int] = Field(default=2, ge=1)
    history_draw: Literal["step", "interval"] = "interval"
    log_history_loss: bool = False       # also measure the history loss where the method needs none
    # run a memory batch's shared task prefixes once (prefix.py); "auto": for models of at
    # least prefix.MIN_SHARING_PARAMETERS parameters (a tiny model's passes are fixed cost)
    history_share_prefix: Union[Literal["auto"], bool] = "auto"
    # the history pass's precision (monitoring.py): "auto" = bfloat16 autocast for a float32
    # model of at least 50M parameters where bfloat16 measured faster (precision.py), else as
    # the model runs
    history_precision: Literal["auto", "model", "bfloat16"] = "auto"
    # merge controller (SPEC.md)
    s_init: int = Field(default=8, ge=1)
    window: int = Field(default=3, ge=1)
    s_min: int = Field(default=2, ge=1)
    s_max: int = Field(default=128, ge=1)
    gamma_forget: float = Field(default=2.0, gt=0)
    f_max: int = Field(default=3, ge=1)
    use_learning_signal: bool = True
    use_forgetting_signal: bool = True
    fixed_alphas: Optional[tuple[float, float]] = None
    importance_fusion: bool = False      # "+IFM": element-wise importance weights
    # alpha_past == 0 discards the rehearsal's result: skip its steps (the rehearsal AdamW then
    # sees fewer steps, which changes later merges of the task a little); False runs them all
    skip_idle_rehearsal: bool = True
    variant: Literal["paper", "reference_code"] = "paper"
    # baselines
    ewc_lambda: float = Field(default=5000.0, ge=0)
    ewc_fisher_batches: int = Field(default=8, ge=1)
    ifm_beta: float = Field(default=0.85, ge=0, lt=1)   # EMA of sensitivity (Recurrent-KIF / TaSL)

    @model_validator(mode="after")
    def _check(self) -> "MethodConfig":
        if self.name not in METHOD_NAMES:
            raise ValueError(f"method.name: unknown method {self.name!r}; known: {', '.join(METHOD_NAMES)}")
        if self.s_min > self.s_max:
            raise ValueError(f"method.s_min ({self.s_min}) > method.s_max ({self.s_max})")
        if not self.s_min <= self.s_init <= self.s_max:
            raise ValueError(f"method.s_init ({self.s_init}) outside [s_min, s_max]")
        if self.fixed_alphas is not None and not all(0 <= a <= 1 for a in self.fixed_alphas):
            raise ValueError("method.fixed_alphas must lie in [0, 1]")
        return self


class TrainConfig(_Section):
    """Optimisation (paper appendix D: AdamW, lr 3e-4, batch 8)."""

    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    max_grad_norm: Optional[float] = Field(default=1.0, gt=0)
    max_steps_per_task: Optional[int] = Field(default=None, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    report_to: Optional[str] = None      # an Accelerate tracker name, e.g. "tensorboard"
    checkpoint_every: int = Field(default=0, ge=0)   # steps; 0 = only at the end of each task
    # training steps run each shared task prefix once (prefix.py): faster on instruction data;
    # the prefix tokens' LoRA dropout mask is then shared by the rows of a group
    share_prefix: bool = False

    @field_validator("report_to")
    @classmethod
    def _no_tracker_when_empty(cls, value: Optional[str]) -> Optional[str]:
        return value.strip() or None if isinstance(value, str) else value


class EvalConfig(_Section):
    """Evaluation after each task: batched greedy generation."""

    batch_size: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=16, ge=1)


class RunConfig(_Section):
    """A whole run: one task order, one method."""

    seed: int = 42
    single_task_scores: Optional[dict[str, float]] = None   # a0 per task, for FWT
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


def _format_error(err: ValidationError, source: str, overrides: Sequence[str] = ()) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    where = f"{source}: " if source else ""
    for item in reversed(list(overrides)):        # the last --set of a key is the one in force
        key = item.split("=", 1)[0].strip()
        if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
            where = f"--set {item}: "
            break
    if loc and msg.startswith(loc + "."):
        loc = ""
    return f"{where}{loc + ': ' if loc else ''}{msg}"


def split_config_argument(config: Optional[str], overrides: Sequence[str]) -> tuple[str, list[str]]:
    """The config file and the ``--set`` items of a command line where ``--set KEY=VALUE ...``
    (several values a flag) may have taken the config file that followed it: the one item
    without ``=``. Raises ConfigError when there is no config file, or more than one."""
    overrides = list(overrides)
    if config is not None:
        return config, overrides
    bare = [o for o in overrides if "=" not in o]
    if len(bare) != 1:
        raise ConfigError("give the YAML config file (e.g. configs/smoke.yaml)" if not bare else
                          f"--set: {', '.join(map(repr, bare))} are not KEY=VALUE items")
    if not bare[0].endswith((".yaml", ".yml")) and not Path(bare[0]).is_file():
        raise ConfigError(f"--set {bare[0]!r}: expected KEY=VALUE (and give the YAML config file)")
    return bare[0], [o for o in overrides if o != bare[0]]


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML (numbers, lists, booleans, null)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set`` overrides to a raw config dict (returns a new dict)."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_raw(path: Union[str, Path]) -> dict:
    """Read a YAML config file into a dict. Raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return raw


def build_config(raw: dict, source: str = "", overrides: Sequence[str] = ()) -> RunConfig:
    """Validate a raw dict into a :class:`RunConfig`. Raises ConfigError (one line) naming
    ``source`` (the config file), or the ``--set`` item of ``overrides`` that set the bad key."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, overrides)) from None


def load_config(path: Union[str, Path, None], overrides: Optional[list[str]] = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw = load_raw(path) if path is not None else {}
    return build_config(apply_overrides(raw, overrides or []), str(path or ""), overrides or [])


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (written to ``config.yaml`` in the run folder)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flat_config(cfg: RunConfig) -> dict[str, Union[int, float, str, bool]]:
    """The config as ``{"section.key": value}`` with scalar values, as trackers' hparams need.

    Lists become their YAML-like text (``[q_proj, v_proj]``) and None becomes ``"none"``.
    """
    out: dict[str, Union[int, float, str, bool]] = {}
    for section, values in cfg.model_dump(mode="json").items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            name = section if key is None else f"{section}.{key}"
            if value is None:
                value = "none"
            elif isinstance(value, list):
                value = "[" + ", ".join(map(str, value)) + "]"
            elif isinstance(value, dict):
                value = str(value)
            out[name] = value
    return out

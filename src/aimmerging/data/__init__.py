"""Benchmark data (both layouts), tasks given by their files, the task registry, sampling."""

from aimmerging.data.formats import (
    SPLITS,
    Example,
    canonical_split,
    detect_layout,
    list_tasks,
    load_file,
    load_split,
)
from aimmerging.data.registry import (
    ORDERS,
    TASKS,
    TaskInfo,
    canonical_task_name,
    get_task_info,
    resolve_order,
)
from aimmerging.data.sampling import TaskData, draw_task, held_out, load_task_data, subsample
from aimmerging.data.spec import TaskSpec
from aimmerging.data.custom import load_custom_task

__all__ = [
    "SPLITS",
    "Example",
    "canonical_split",
    "detect_layout",
    "list_tasks",
    "load_file",
    "load_split",
    "ORDERS",
    "TASKS",
    "TaskInfo",
    "canonical_task_name",
    "get_task_info",
    "resolve_order",
    "TaskData",
    "draw_task",
    "held_out",
    "load_task_data",
    "subsample",
    "TaskSpec",
    "load_custom_task",
]

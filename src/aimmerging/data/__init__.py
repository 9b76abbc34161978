"""Benchmark data: reading both layouts, the task registry, subsampling."""

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
from aimmerging.data.sampling import TaskData, load_task_data, subsample

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
    "load_task_data",
    "subsample",
]

"""Task adapters: one module a task, each opening with its metadata."""

from harness.tasks.base import Question, Task
from harness.tasks.registry import TASKS


def get_task(name: str, **kwargs) -> Task:
    return TASKS.get(name)(**kwargs)


__all__ = ["Question", "Task", "TASKS", "get_task"]

"""A benchmark harness for multi-agent LLM self-training data selection (DITS, Optima)."""


def evaluate(config=None, **overrides):
    """`harness eval` as a function; see `harness.evaluation.evaluate`."""
    from harness.evaluation import evaluate as _evaluate

    return _evaluate(config, **overrides)


__all__ = ["evaluate"]

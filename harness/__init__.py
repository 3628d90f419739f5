"""A benchmark harness for multi-agent LLM self-training data selection (DITS, Optima)."""


def evaluate(config=None, **overrides):
    """`harness eval` as a function; see `harness.evaluate.evaluate`."""
    from harness.evaluate import evaluate as _evaluate

    return _evaluate(config, **overrides)


__all__ = ["evaluate"]

"""The multi-agent system scored by lm-eval and by `harness eval` gives the same answers and score."""

import lm_eval
import pytest

import harness.lmeval  # noqa: F401  (registers the harness-mas model)
from harness import evaluate
from harness.lmeval import task_config
from harness.tasks.base import FIXTURES

N = 12


# The task's own roster, and three agents of which one speaks with a frozen model (the bridge's
# `model_args` name the roster and the speaker's model as `harness eval`'s config keys do).
@pytest.mark.parametrize("roster", [{}, {"roster": "information_exchange_3", "speaker_models": "Carol=tiny-random"}],
                         ids=["own_roster", "three_agents_one_frozen"])
def test_lm_eval_and_harness_eval_agree_on_mmlu(tmp_path, roster):
    # The fixtures' train split is what tiny-fitted was fitted on, so some answers are right.
    native = evaluate(task="mmlu", model="tiny-fitted", split="train", limit=N, data_dir=str(FIXTURES),
                      metric="em", out=str(tmp_path / "native"), max_new_tokens=48,
                      answer_mode="generate", **roster)  # lm-eval's generate_until: answers the dialogue writes
    results = lm_eval.simple_evaluate(
        model="harness-mas", model_args=",".join(["task=mmlu,model=tiny-fitted,max_new_tokens=48",
                                                   *(f"{k}={v}" for k, v in roster.items())]),
        tasks=[task_config("mmlu", FIXTURES, splits=("train",)) | {"test_split": "train"}],
        limit=N, bootstrap_iters=0, log_samples=True,
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )
    samples = results["samples"]["harness_mmlu"]
    bridge_predictions = [s["filtered_resps"][0] for s in sorted(samples, key=lambda s: s["doc_id"])]
    native_predictions = [r["prediction"] for r in native.per_instance]
    assert bridge_predictions == native_predictions
    assert all(native_predictions) and len(set(native_predictions)) > 1
    score = results["results"]["harness_mmlu"]["exact_match,none"]
    assert score == native.stats["mean"]

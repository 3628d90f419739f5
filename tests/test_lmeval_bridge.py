"""The two-agent system scored by lm-eval and by `harness eval` gives the same answers and score."""

import lm_eval

import harness.lmeval  # noqa: F401  (registers the harness-mas model)
from harness import evaluate
from harness.lmeval import task_config
from harness.tasks.base import FIXTURES

N = 12


def test_lm_eval_and_harness_eval_agree_on_mmlu(tmp_path):
    # The fixtures' train split is what tiny-fitted was fitted on, so some answers are right.
    native = evaluate(task="mmlu", model="tiny-fitted", split="train", limit=N, data_dir=str(FIXTURES),
                      metric="em", out=str(tmp_path / "native"), max_new_tokens=48,
                      answer_mode="generate")  # lm-eval's generate_until: answers the dialogue writes
    results = lm_eval.simple_evaluate(
        model="harness-mas", model_args="task=mmlu,model=tiny-fitted,max_new_tokens=48",
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

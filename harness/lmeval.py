"""The multi-agent system as an lm-eval model, so tasks can also be scored through lm-eval.

    lm_eval.simple_evaluate(model="harness-mas", model_args="task=arc_c,model=tiny-fitted",
                            tasks=[harness.lmeval.task_config("arc_c", data_dir)])

`generate_until` runs one full dialogue per request (all of them batched together, as
`harness eval` does) and returns the dialogue's final answer. The lm-eval context is the question
text; the harness task named in `model_args` decides the setting, hence the default roster and the
agents' prompts. `roster` and `speaker_models` are the config keys of those names ("Bob=tiny-random":
Bob speaks with that frozen model, the others with `model`); a `model_args` string splits on commas,
so two or more frozen speakers need `model_args` as a dict. Contexts that lm-eval cannot pass
(information exchange documents) are empty on this path.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness.backends import make_backend
from harness.errors import HarnessError
from harness.mas.dialogue import DialogueConfig, run_dialogues, start
from harness.mas.roster import roster_for
from harness.mas.speakers import Speakers
from harness.tasks import get_task
from harness.tasks.base import Question
from harness.tasks.metrics import LMEVAL_EXACT_MATCH_KWARGS

CONFIGS = Path(__file__).resolve().parent / "tasks" / "lmeval"


def task_config(task: str, data_dir: str | Path, splits=("test",)) -> dict:
    """The shipped lm-eval config of a task, pointed at `<data_dir>/<task>/<split>.jsonl`, with
    exact match normalised as the harness's `em` metric normalises."""
    path = CONFIGS / f"{task}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise HarnessError(f"no lm-eval config for {task!r}; have: {', '.join(have)}")
    config = yaml.safe_load(path.read_text())
    config["dataset_kwargs"] = {"data_files": {s: str(Path(data_dir) / task / f"{s}.jsonl") for s in splits}}
    for split_key in ("test_split", "validation_split"):
        if config.get(split_key) not in splits:
            config.pop(split_key, None)
    for metric in config["metric_list"]:
        if metric["metric"] == "exact_match":
            metric.update(LMEVAL_EXACT_MATCH_KWARGS)
    return config


@register_model("harness-mas")
class MultiAgentLM(LM):
    def __init__(self, task: str = "arc_c", model: str = "smollm2-135m", seed: int = 0, max_turns: int = 10,
                 max_new_tokens: int = DialogueConfig.max_new_tokens, batch_size: int = 32, device: str = "cpu",
                 roster: str | None = None, speaker_models: str | None = None, **_ignored):
        super().__init__()
        self.roster = roster_for(get_task(task).setting, roster, speaker_models)
        self.seed = int(seed)
        self.dialogue = DialogueConfig(max_turns=int(max_turns), max_new_tokens=int(max_new_tokens))
        settings = {"device": device, "batch_size": int(batch_size)}
        self.backend = make_backend(None, model=model, **settings)
        self.speakers = Speakers.for_roster(self.roster, self.backend,
                                            lambda name: make_backend(None, model=name, **settings), model)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        questions = [Question(id=str(i), question=r.args[0], golds=()) for i, r in enumerate(requests)]
        dialogues = run_dialogues(start(questions, self.roster), self.speakers, self.dialogue, self.seed)
        return [d.final_answer for d in dialogues]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the multi-agent system generates dialogues; it does not score continuations")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the multi-agent system generates dialogues; it does not score continuations")

"""The task registry. Entries are lazy so `harness ls tasks` imports only what it lists."""

from harness.registry import Registry

TASKS = Registry("task")
for _name, _target in {
    "hotpotqa": "harness.tasks.hotpotqa:HotpotQA",
    "2wmh": "harness.tasks.twowiki:TwoWikiMultihopQA",
    "triviaqa": "harness.tasks.triviaqa:TriviaQA",
    "cbt": "harness.tasks.cbt:CBT",
    "arc_c": "harness.tasks.arc_c:ARCChallenge",
    "mmlu": "harness.tasks.mmlu:MMLU",
    "webwalker": "harness.tasks.webwalker:WebWalker",
}.items():
    TASKS.register(_name, _target)

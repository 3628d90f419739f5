"""The task registry. Entries are lazy so `harness ls tasks` imports only what it lists."""

from harness.registry import Registry

TASKS = Registry("task")
for _name, _target in {
    "hotpotqa": "tasks.hotpotqa:HotpotQA",
    "2wmh": "tasks.twowiki:TwoWikiMultihopQA",
    "triviaqa": "tasks.triviaqa:TriviaQA",
    "cbt": "tasks.cbt:CBT",
    "arc_c": "tasks.arc_c:ARCChallenge",
    "mmlu": "tasks.mmlu:MMLU",
    "webwalker": "tasks.webwalker:WebWalker",
}.items():
    TASKS.register(_name, _target)

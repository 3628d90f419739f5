"""The progress bar of dialogues that advance together, counted in utterances.

Dialogues in a batch speak one turn per forward pass, so a bar counting finished dialogues sits
still until the batch's last one ends. This one counts utterances: it moves every turn, its total
starts at the turn cap of every dialogue and drops as dialogues end early (or start part-way), so
the total and the ETA are upper bounds that tighten as the work is known.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class UtteranceBar(tqdm):
    def __init__(self, dialogues: int, cap: int, desc: str, done: int = 0, **kwargs):
        self.cap = cap  # the most utterances a dialogue can have (DialogueConfig.max_utterances)
        super().__init__(total=dialogues * self.cap, initial=done * self.cap, desc=desc, unit="utterance",
                         **{"file": sys.stderr, "dynamic_ncols": True, **kwargs})
        self.dialogues, self.ended = dialogues, done

    def begin(self, spoken: list[int], done: list[bool]) -> None:
        """Dialogues starting with `spoken` utterances already said (and some already over)."""
        self.unneeded(sum(self.cap if d else n for n, d in zip(spoken, done)))
        self.ended += sum(done)

    def spoke(self, utterances: int) -> None:
        self.update(utterances)

    def end(self, spoken: int) -> None:
        """A dialogue ended after `spoken` utterances: its remaining turns will not be said."""
        self.ended += 1
        self.unneeded(self.cap - spoken)
        self.set_postfix_str(f"{self.ended}/{self.dialogues} dialogues", refresh=False)

    def unneeded(self, utterances: int) -> None:
        if utterances > 0:
            self.total -= utterances
            self.refresh()

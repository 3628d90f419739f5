"""Influence of candidate units on the validation metric (DITS), in files with one job each:

- `record`: what an estimate holds (`Estimate`), its units and the facts of the pairs it reads;
- `reference_path`: the reference procedure, kept as the correctness oracle (`ReferencePath`);
- `fast_path`: the same influence checking theta*'s validation dialogues as drafts (`FastPath`), with
  the units' steps from shared passes (`unit_steps`), the drafts a step cannot change certified
  (`certify`) and, in answer_mode=choice, the options of the turns that hold scored again
  (`choice_rescore`);
- `server_path`: the same influence with the validation dialogues answered by servers holding the
  units' adapters (`ServerPath`), its request plan in `server_plan`, the adapter endpoints in `adapter_client`;
- `screen_path`: the first-order screen of `harness.screen` in the exact influence's place (`ScreenPath`);
- `estimator`: the entry point (`estimate`): inputs checked, the path chosen, results cached.
"""

from harness.dits.influence.estimator import KNOBS, PATHS, estimate, path_for, prepare
from harness.dits.influence.fast_path import DraftTurn, FastPath, chains
from harness.dits.influence.record import Estimate, answer_mode, closing_turn, make_units
from harness.dits.influence.reference_path import STEP_OPTIMIZERS, ReferencePath, Start
from harness.dits.influence.screen_path import ScreenPath
from harness.dits.influence.server_path import ServerPath

__all__ = ["KNOBS", "PATHS", "STEP_OPTIMIZERS", "DraftTurn", "Estimate", "FastPath", "ReferencePath", "ScreenPath",
           "ServerPath", "Start", "answer_mode", "chains", "closing_turn", "estimate", "make_units", "path_for",
           "prepare"]

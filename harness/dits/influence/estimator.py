"""An influence estimate: the path that computes it, checked inputs, and its cache.

Results are cached by (pairs, policy, validation questions, influence knobs, kind): gamma and alpha
are not in the key, so gamma 0 and gamma 1 of one suite share one estimate. While one is computed,
its finished units are journaled beside the cache (`unit_journal`), so a killed selection resumes
from them. The validation dialogues are the roster's (`roster`, `speaker_models`: knobs too); frozen
speakers need the reference or server path (the fast path's drafts record only the policy's turns).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

from harness import models, runs
from harness.config import SelectConfig
from harness.dits.influence import unit_journal
from harness.dits.influence.fast_path import FastPath
from harness.dits.influence.record import Estimate, answer_mode, closing_turn
from harness.dits.influence.reference_path import STEP_OPTIMIZERS, ReferencePath
from harness.dits.influence.screen_path import ScreenPath
from harness.dits.influence.server_path import ServerPath
from harness.errors import HarnessError
from harness.mas.roster import task_and_roster
from harness.records import lock

log = logging.getLogger(__name__)

# The knobs an estimate depends on (the runtime's, influence's and the whole lora section); the cache
# key hashes them with the pairs and the validation set.
KNOBS = ("max_turns", "max_new_tokens", "context_mode", "seed", "dtype", "roster", "speaker_models")
INFLUENCE_KNOBS = ("unit_size", "warmup_steps", "warmup_batch", "warmup_lr", "eta", "step_optimizer", "beta",
                   "eta_auto", "eta_target_share", "eta_calibration_units", "eta_auto_steps", "micro_batch", "path",
                   "decode_lookahead", "certify", "certify_margins", "certify_safety", "certify_audit")
# Not knobs: decode_units, max_loras and adapter_dir. The first two only group units (into one decoding
# batch, into one batch of adapters on the servers) and each unit's F is still its own dialogues' on its
# own weights; the third is where adapter files wait. A server's batch-dependent rounding could move an
# F, but so could server.concurrency, and the servers are no part of any identity.
# The certify knobs are knobs: a certificate is sound to first order only, and a wrong one outside the
# audit keeps theta*'s dialogue where the unit's differs, so they can move an F (as decode_lookahead can,
# within a near-tie); the audit measures how often (`drafts.wrong_certifications`), it does not undo it.

PATHS = {path.name: path for path in (ReferencePath, FastPath, ServerPath, ScreenPath)}


def estimate(pairs: list[dict], cfg: SelectConfig, cache_dir: Path | None, kind: str = "metric") -> Estimate:
    """Per unit of pairs, the validation metric F (kind "metric", DITS) or the validation DPO loss
    (kind "loss", the ablation) after one step from theta*, and the same before the step."""
    if kind == "loss" and cfg.influence.path == "screen":
        raise HarnessError("influence.path=screen screens the validation metric (selector dits), not the loss")
    task, policy, validation = prepare(pairs, cfg)
    key_data = {"pairs": [[p["pair_id"], p["chosen"], p["rejected"]] for p in pairs],
                "policy": pairs[0]["policy"]["sha256"], "validation": [q.id for q in validation],
                "knobs": {**{k: getattr(cfg, k) for k in KNOBS}, "lora": asdict(cfg.lora),
                          "influence": {k: getattr(cfg.influence, k) for k in INFLUENCE_KNOBS}},
                "kind": kind, "answer_mode": answer_mode(pairs),
                "closing_turn": closing_turn(pairs)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    if cache_dir is None:
        return PATHS[path_for(cfg, pairs)](pairs, cfg, task, policy, validation, key=key).run(kind)
    cached = cache_dir / f"{key}.json"
    # One process computes an estimate at a time (another selection waits, then reads it), so two
    # never append to one journal of its units.
    with lock.hold(cache_dir, wait=True, progress=log.warning):
        if cached.exists():
            return replace(Estimate(**json.loads(cached.read_text())), reused=True)
        units = cache_dir / f"{key}.units.jsonl"  # the groups of units a killed estimate finished
        path = PATHS[path_for(cfg, pairs)](pairs, cfg, task, policy, validation, key=key)
        result = unit_journal.run(path, kind, units, key)
        runs.write_json(cached, asdict(result))
        units.unlink(missing_ok=True)
    return result


def path_for(cfg: SelectConfig, pairs: list[dict]) -> str:
    """The influence path an estimate takes: the configured one. (In answer_mode=choice the fast path
    scores the options of the turns that hold again under each unit's weights: `choice_rescore`.)"""
    return cfg.influence.path


def prepare(pairs: list[dict], cfg: SelectConfig):
    """The task, the policy and the validation questions of an estimate, checked: the policy must be
    the one that grew the pairs, the validation questions disjoint from the pairs' (unless allowed),
    the roster's frozen speakers known and on the reference path. The task deals its context into
    the roster's slots (`task_and_roster`; the paths build the same roster from `cfg`)."""
    inf = cfg.influence
    if inf.step_optimizer not in STEP_OPTIMIZERS:
        raise HarnessError(f"influence.step_optimizer must be one of {', '.join(STEP_OPTIMIZERS)}, "
                           f"got {inf.step_optimizer!r}")
    if inf.eta <= 0:
        raise HarnessError(f"influence.eta must be positive (the unit step's learning rate), got {inf.eta}")
    if inf.path not in PATHS:
        raise HarnessError(f"influence.path must be one of {', '.join(PATHS)}, got {inf.path!r}")
    if inf.path == "server" and cfg.backend != "openai":
        raise HarnessError(f"influence.path=server answers on the servers of backend=openai (vLLM with runtime LoRA "
                           f"loading: docs/vllm-adapters.md), not backend={cfg.backend}")
    if cfg.backend not in ("hf", "openai") or (cfg.backend == "openai" and inf.path != "server"):
        raise HarnessError(f"influence estimates run on the hf backend (the policy trains in process and the fast "
                           f"path reuses its keys/values), or with influence.path=server on backend=openai; not "
                           f"backend={cfg.backend} with influence.path={inf.path}")
    for knob, least in (("micro_batch", 1), ("decode_units", 1), ("decode_lookahead", 0), ("max_loras", 1),
                        ("certify_margins", 1)):
        if getattr(inf, knob) < least:
            raise HarnessError(f"influence.{knob} must be at least {least}, got {getattr(inf, knob)}")
    if not (inf.certify_safety > 0 and 0 <= inf.certify_audit <= 1):
        raise HarnessError(f"influence.certify_safety must be positive and certify_audit in [0, 1]; got "
                           f"{inf.certify_safety}, {inf.certify_audit}")
    if inf.eta_auto and not (0 < inf.eta_target_share <= 1 and inf.eta_calibration_units >= 1
                             and inf.eta_auto_steps >= 0):
        raise HarnessError("eta auto needs eta_target_share in (0, 1], eta_calibration_units >= 1 and "
                           f"eta_auto_steps >= 0; got {inf.eta_target_share}, {inf.eta_calibration_units}, "
                           f"{inf.eta_auto_steps}")
    task_name = pairs[0]["task"]
    task, roster = task_and_roster(cfg, task_name)
    if roster.frozen_models and path_for(cfg, pairs) == "fast":
        raise HarnessError("speaker_models needs influence.path=reference: the fast path's drafts record "
                           "only the policy's turns, not a frozen speaker's")
    policy = cfg.model or pairs[0]["policy"]["name"]
    for model in (policy, *roster.frozen_models):
        models.check(model)
    grown_by = pairs[0]["policy"]
    if models.weights_hash(models.resolve(policy)) != grown_by["sha256"]:
        raise HarnessError(f"the pairs were grown by {grown_by['name']} ({grown_by['sha256'][:12]}), not by "
                           f"{policy}: estimate influence on the policy that grew them")
    validation = task.load(inf.val_split, cfg.data_dir, inf.validation_size, cfg.online)
    if not validation:
        raise HarnessError(f"{task_name}/{inf.val_split}: no validation questions")
    overlap = {p["question_id"] for p in pairs} & {q.id for q in validation}
    if overlap and not inf.allow_overlap:
        raise HarnessError(f"{len(overlap)} of the {len(validation)} {inf.val_split} questions are training "
                           f"questions of the pairs (e.g. {min(overlap)}); choose a disjoint val_split "
                           "or set allow_overlap=true")
    return task, policy, validation

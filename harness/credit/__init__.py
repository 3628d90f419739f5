"""Per-action credit from a coach model (MAPPA, arXiv 2601.23228, code ltjed/multiagent-coaching, read
for behaviour): a coach scores each agent's action, so credit goes to the agent that earned it,
without gold labels. `prompt` holds the versioned coach prompt, `coach` the calls through any backend
and their cache, `stats` the pure summaries reports read (credit per agent, parse rate, Spearman
against the task's reward and correctness, bias by agent and action). This package imports nothing
of its own here, so a report can read `stats` without the engines `coach` needs.
"""

"""Option scores of answer_mode=choice under a unit's weights, for the fast path's dialogues.

A unit's step can move the option scores without changing a token, so a draft dialogue whose tokens
all hold still has its answers scored again: each utterance's answer is the option its speaker scores
highest given its memory after the utterance (`harness.mas.dialogue.choose`, called as the dialogue
loop calls it, with `TreeScorer` in the backend's place). The context of an utterance's options is
its speaker's checked sequence (the turn's prompt and tokens) and a few tokens after it (end of turn,
a new assistant turn, the speaker's name), so the scorer reads the check's keys/values up to their
common prefix and feeds only the rest: per utterance a tree of tokens, the context's remainder once
and each option's tokens as a branch on it (options that open alike share those tokens too). A
4-D attention mask lets each token see its row's cached prefix up to its utterance's context and its
own ancestors, so one forward pass scores every utterance of up to ROWS_PER_PASS checked chains, each
chain a batch row holding its utterances' trees side by side. Tokens are encoded as `HFBackend.loglikelihood` encodes them; the one difference
is floating point (merged weights, another order of sums), so an argmax between two options within
NEAR_TIE is counted as a near-tie, as the checks' are.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.backends.attention import CAUSAL_AFTER_CACHE, GROUPED_SDPA
from harness.backends.base import Choice
from harness.backends.kv_cache import Slot, common_prefix, padded_cache


# Checked sequences scored a forward pass, and held at once: each row's keys/values are copied into the
# pass's padded cache, and SmolLM2's are 46 KB a token (8 rows of 1,500 tokens: 0.55 GB, held twice).
ROWS_PER_PASS = 8
READS_PER_CHUNK = 1024  # option tokens whose logits are computed at once


def choice_ids(tokenizer, choice: Choice) -> tuple[list[int], list[list[int]]]:
    """A choice's context tokens and each continuation's, encoded as `HFBackend.loglikelihood` does."""
    text = tokenizer.apply_chat_template(choice.messages, tokenize=False, add_generation_prompt=True)
    context = tokenizer(text + choice.prefix, add_special_tokens=False).input_ids
    return context, [tokenizer(c, add_special_tokens=False).input_ids for c in choice.continuations]


@dataclass
class _Tree:
    """One choice's tokens to feed after `cached` tokens of its row's sequence: node i is token
    tokens[i] at position cached + depth[i], child of parents[i] (-1: the root's)."""

    cached: int
    tokens: list[int]
    parents: list[int]
    depth: list[int]
    reads: list[list[int]]  # per continuation, the nodes whose logits predict its tokens
    targets: list[list[int]]  # per continuation, its tokens

    @classmethod
    def of(cls, context: list[int], continuations: list[list[int]], cached: int) -> "_Tree":
        tokens, parents, depth, children = [], [], [], {}
        reads = []
        for cont in continuations:
            path, parent = [], -1
            for d, tok in enumerate(context[cached:] + cont[:-1]):
                node = children.get((parent, tok))
                if node is None:
                    node = children[(parent, tok)] = len(tokens)
                    tokens.append(tok)
                    parents.append(parent)
                    depth.append(d)
                path.append(node)
                parent = node
            reads.append(path[len(context) - cached - 1:])  # from the context's last token on
        return cls(cached, tokens, parents, depth, reads, [list(c) for c in continuations])

    def ancestry(self) -> torch.Tensor:
        """(nodes, nodes) bool: node i sees node j where j is i or an ancestor of i."""
        n = len(self.tokens)
        seen = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):  # parents come before their children
            if parent >= 0:
                seen[i] = seen[parent]
            seen[i, i] = True
        return seen


@contextmanager
def masked_attention(model):
    """The checker on grouped sdpa, which takes the trees' 4-D masks, for the duration (it checks on
    CAUSAL_AFTER_CACHE, which takes none)."""
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation(CAUSAL_AFTER_CACHE)


class TreeScorer:
    """`Backend.loglikelihood` for `choose`, on `model` (the checker, merged to the unit's weights)
    over keys/values registered per cache slot (`register`: a checked sequence and its keys/values).
    Scores `rows_per_pass` registered sequences a forward pass."""

    def __init__(self, model, tokenizer, rows_per_pass: int, account: dict):
        self.model, self.tokenizer, self.rows_per_pass, self.account = model, tokenizer, rows_per_pass, account
        self.device = next(model.parameters()).device
        self.sequences: dict[str, list[tuple[list[int], list]]] = {}

    def register(self, cache_key: str, sequence: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.sequences.setdefault(cache_key, []).append((sequence, kv))

    @property
    def registered(self) -> int:
        return sum(map(len, self.sequences.values()))

    def clear(self) -> None:
        self.sequences = {}

    def loglikelihood(self, agents, choices: list[Choice]) -> list[list[tuple[float, int]]]:
        """Per choice, per continuation: its summed log-probability after the context, and its length."""
        rows: dict[tuple[str, int], list[tuple[int, _Tree]]] = {}
        for c, choice in enumerate(choices):
            context, continuations = choice_ids(self.tokenizer, choice)
            if not all(continuations):
                raise ValueError(f"an empty continuation among {choice.continuations!r}")
            held = self.sequences.get(choice.cache_key, [])
            if not held:
                raise ValueError(f"no checked sequence of slot {choice.cache_key!r} to score its options on")
            # The registered sequence sharing the longest prefix with the context (an agent's chains)
            r = max(range(len(held)), key=lambda i: common_prefix(held[i][0], context))
            cached = min(common_prefix(held[r][0], context), len(context) - 1)
            rows.setdefault((choice.cache_key, r), []).append((c, _Tree.of(context, continuations, cached)))
        out: list = [None] * len(choices)
        # Rows of like widths share a pass: each pass pads its rows to its widest
        keys = sorted(rows, key=lambda k: sum(len(tree.tokens) for _, tree in rows[k]))
        with masked_attention(self.model):
            for lo in range(0, len(keys), self.rows_per_pass):
                batch = keys[lo:lo + self.rows_per_pass]
                for c, scored in self._pass([self.sequences[k][r] for k, r in batch], [rows[k] for k in batch]):
                    out[c] = scored
        return out

    @torch.no_grad()
    def _pass(self, held: list[tuple[list[int], list]], trees: list[list[tuple[int, _Tree]]]) -> list[tuple[int, list]]:
        """One forward pass: row b feeds its trees after its sequence's keys/values (`held[b]`).
        (choice index, its continuations' scores) per tree."""
        lengths = [len(seq) for seq, _ in held]
        past = max(lengths)
        width = max(sum(len(t.tokens) for _, t in row) for row in trees)
        ids = torch.zeros(len(held), width, dtype=torch.long)
        positions = torch.zeros(len(held), width, dtype=torch.long)
        mask = torch.zeros(len(held), 1, width, past + width, dtype=torch.bool)
        mask[:, 0, :, past:] = torch.eye(width, dtype=torch.bool)  # padding sees itself (no empty rows)
        reads = []  # (row, node index in the row) per continuation token, in order
        for b, (row, n) in enumerate(zip(trees, lengths)):
            offset = 0
            for _, tree in row:
                size = len(tree.tokens)
                span = slice(offset, offset + size)
                ids[b, span] = torch.tensor(tree.tokens)
                positions[b, span] = tree.cached + torch.tensor(tree.depth)
                mask[b, 0, span, past - n:past - n + tree.cached] = True  # its context's cached part
                mask[b, 0, span, past + offset:past + offset + size] = tree.ancestry()
                reads += [(b, offset + node) for nodes in tree.reads for node in nodes]
                offset += size
            self.account["rescored_tokens"] += offset
        cache = padded_cache([Slot(seq, kv) for seq, kv in held], lengths, past, width)
        hidden = self.model.get_decoder()(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          position_ids=positions.to(self.device), cache=cache,
                                          use_cache=True).last_hidden_state
        self.account["rescore_passes"] += 1
        index = torch.tensor(reads, device=self.device)
        states = hidden[index[:, 0], index[:, 1]]
        targets = torch.tensor([t for row in trees for _, tree in row for cont in tree.targets for t in cont],
                               device=self.device)
        token_lp = []
        for lo in range(0, len(reads), READS_PER_CHUNK):  # logits of a 49k vocabulary: 0.2 GB a chunk
            logits = self.model.get_output_embeddings()(states[lo:lo + READS_PER_CHUNK]).float()
            picked = logits.gather(-1, targets[lo:lo + READS_PER_CHUNK].unsqueeze(-1)).squeeze(-1)
            token_lp += (picked - logits.logsumexp(-1)).tolist()
        out, at = [], 0
        for row in trees:
            for c, tree in row:
                scored = []
                for cont in tree.targets:
                    scored.append((sum(token_lp[at:at + len(cont)]), len(cont)))
                    at += len(cont)
                out.append((c, scored))
        return out

"""The tiny test models: a 2-layer Llama with a tokenizer trained in-process (no hub); the same
model fitted on fixture dialogues so that it answers in ``<A>...</A>``; and that one fitted further
on scripted web episodes, so that it clicks through served sites to an answer.

All three are deterministic: the tokenizer is trained on the fixture text in file order, weights
come from a fixed seed, and fitting runs a fixed number of steps in a fixed order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import torch

from harness import mas
from harness.config import WebConfig
from harness.mas.dialogue import NAMES, Dialogue, Utterance, start
from harness.tasks.base import FIXTURES, read_jsonl

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FITTED_TASKS = ("hotpotqa", "triviaqa", "cbt", "arc_c", "mmlu")
SEED = 1234
# The fit's float sums depend on how many threads split them, and a few hundred steps carry the
# difference into other answers: it always runs on this many, whatever the machine's cores or
# OMP_NUM_THREADS, so a CPU of one kind always builds the same model (the smoke references' model).
FIT_THREADS = 2


@functools.cache
def sources_hash() -> str:
    """The models' recipe in the catalogue (`harness.models`): a hash of what they are built from
    (this file, the agents' package, whose prompts and dialogue format they are fitted on, and the
    task fixtures), so that any change there rebuilds them."""
    h = hashlib.sha1()
    for f in [Path(__file__), *sorted(Path(mas.__file__).parent.glob("*.py")), *sorted(FIXTURES.glob("*/*.jsonl"))]:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _fixture_texts():
    for path in sorted(FIXTURES.glob("*/*.jsonl")):
        yield path.read_text(encoding="utf-8")


def build_tokenizer(vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from harness.mas import prompts

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [*_fixture_texts(), *(t.template for t in vars(prompts).values() if hasattr(t, "template"))]
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def build_random(out: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def sentences(contexts: tuple[str, ...]) -> list[str]:
    return [s for paragraph in contexts for s in re.split(r"(?<=[.!?]) ", paragraph)]


def evidence(contexts: tuple[str, ...], gold: str) -> str | None:
    """The first context sentence that contains the gold answer, if any: what an agent who holds
    the answer quotes, so that the answer it then gives is a copy from its own message."""
    word = re.compile(rf"\b{re.escape(gold)}\b")
    return next((s for s in sentences(contexts) if word.search(s)), None)


def fixture_dialogues() -> list[Dialogue]:
    """Scripted dialogues on the fixture train splits, the gold answer in <A> tags.

    Information exchange: the agent whose information holds the answer quotes that sentence and
    answers; if that is Bob, Alice first shares a fact without an answer; the partner agrees. The
    answer is then a copy from the context, which a tiny model can learn to do on unseen questions
    too. Debate: Alice gives the option (letter and text), Bob approves, Alice repeats it.
    """
    from harness.tasks import get_task

    dialogues = []
    for name in FITTED_TASKS:
        task = get_task(name)
        # The fixture file itself, never what `load` would read here (CBT builds its items from the
        # shipped books outside the tests): the model must depend on its recipe alone.
        path = FIXTURES / name / "train.jsonl"
        questions = task.parse([(path, i, row) for i, row in read_jsonl(path)], "train")
        for d in start(questions, task.setting):
            gold = d.question.golds[0]
            if task.setting == "information_exchange":
                alice, bob = (evidence(c, gold) for c in d.question.contexts)
                fact = (sentences(d.question.contexts[0]) or [""])[0]
                if alice or not bob:
                    script = [f"{NAMES[0]}: {alice or fact} <A>{gold}</A>", f"{NAMES[1]}: <A>{gold}</A>"]
                else:
                    script = [f"{NAMES[0]}: {fact}", f"{NAMES[1]}: {bob} <A>{gold}</A>",
                              f"{NAMES[0]}: <A>{gold}</A>"]
            else:
                # "D. copper wire": the option's letter (which the metric reads) comes first, so a
                # single memorised token carries the choice, and on unseen questions any letter
                # the model emits is a valid choice rather than a garbled option text.
                choice = f"{'ABCDEFGHIJ'[d.question.options.index(gold)]}. {gold}"
                script = [f"{NAMES[0]}: <A>{choice}</A>", f"{NAMES[1]}: Correct.", f"{NAMES[0]}: <A>{choice}</A>"]
            for i, text in enumerate(script):
                d.add(Utterance(NAMES[i % 2], text, "", 0, 0, 0, False), max_turns=10)
            dialogues.append(d)
    return dialogues


def training_examples(tokenizer, dialogues: list[Dialogue]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per agent view, with loss on the agent's own (assistant) turns only."""
    examples = []
    for d in dialogues:
        for agent in (0, 1):
            messages = d.messages(agent)
            ids: list[int] = []
            labels: list[int] = []
            rendered = ""
            for k in range(len(messages)):
                text = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False)
                piece = tokenizer(text[len(rendered):], add_special_tokens=False).input_ids
                ids += piece
                labels += piece if messages[k]["role"] == "assistant" else [-100] * len(piece)
                rendered = text
            examples.append((ids, labels))
    return examples


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches in a seeded random order, each of examples of similar length: every
    example is seen equally often, and little of a batch is padding."""
    order = sorted(torch.randperm(len(lengths), generator=generator).tolist(), key=lengths.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


# tiny-web's episodes show this much of a page (its tests evaluate with `web.page_chars` set so):
# pages are most of an episode's tokens, and so of its fit's time
WEB_LIMITS = WebConfig(page_chars=400)


@functools.cache
def web_sources_hash() -> str:
    """tiny-web's recipe: tiny-fitted's, and the web environment and written sites its episodes show."""
    h = hashlib.sha1(sources_hash().encode())
    web = Path(__file__).parent / "web"
    for f in sorted(p for p in web.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


# tiny-web's generated wiki: the train pack of the first HotpotQA fixture train rows, small enough
# that the fit learns its two-source paths (its tests build the same pack with `web_wiki`)
WEB_WIKI_ROWS = 4


def web_wiki(data_dir: Path) -> Path:
    """Build tiny-web's generated wiki into `data_dir` as `harness data build-web` would; its folder."""
    from harness.web import generate, splits

    rows = [row for _, row in read_jsonl(FIXTURES / "hotpotqa" / "train.jsonl")][:WEB_WIKI_ROWS]
    folder = splits.packs_dir(data_dir) / splits.pack_name("hotpotqa", "train")
    generate.generate_pack(rows, "hotpotqa", "train", folder)
    return folder


def web_dialogues() -> list[Dialogue]:
    """Scripted WebWalker episodes (`harness.mas.web.scripted`: the golden paths clicked, the gold
    answered) on the train questions of the written sites (the shipped packs) and of tiny-web's
    generated wiki (built in a temporary folder), never a data directory's."""
    import tempfile

    from harness.mas import web
    from harness.mas.roster import roster_for
    from harness.tasks.webwalker import WebWalker
    from harness.web import splits
    from harness.web.world import WORLD

    roster = dataclasses.replace(roster_for("web"), web=WEB_LIMITS)
    with tempfile.TemporaryDirectory() as tmp:
        wiki = web_wiki(Path(tmp))
        rows = WebWalker.pack_rows([*map(splits.pack_dir, splits.WRITTEN), wiki], "train")
        try:
            return [web.scripted(q, roster) for q in WebWalker().parse(rows, "train")]
        finally:
            WORLD.stop(wiki)


def build_fitted(out: Path, steps: int = 800, batch_size: int = 8, lr: float = 1e-2) -> None:
    with fit_threads():
        _fit(out, fixture_dialogues(), steps, batch_size, lr)


def build_web(out: Path, steps: int = 320, batch_size: int = 4, lr: float = 5e-3) -> None:
    """tiny-fitted fitted further on scripted web episodes, so that a web episode can end in an answer."""
    from harness import models

    with fit_threads():
        _fit(out, web_dialogues(), steps, batch_size, lr, start=models.resolve("tiny-fitted"))


@contextlib.contextmanager
def fit_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(FIT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(out: Path, dialogues: list[Dialogue], steps: int, batch_size: int, lr: float,
         start: Path | None = None) -> None:
    import torch.nn.functional as F
    from transformers import AutoTokenizer, LlamaForCausalLM

    if start is None:
        build_random(out)
    else:
        shutil.copytree(start, out, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out)
    examples = training_examples(tokenizer, dialogues)
    order = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    # Short warm-up, then cosine decay to zero: the last steps settle the memorised answers.
    warmup = steps // 20
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    losses = []
    queue: list[list[int]] = []
    for step in range(steps):
        if not queue:
            queue = epoch_batches([len(ids) for ids, _ in examples], batch_size, order)
        batch = [examples[i] for i in queue.pop()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        # Logits only where there is a label (about a tenth of the positions): the vocabulary
        # projection over every position would otherwise dominate the step.
        hidden = model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        loss = F.cross_entropy(model.lm_head(hidden[keep]), targets[keep])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    model.save_pretrained(out)
    (out / "fit.json").write_text(json.dumps({"steps": steps, "examples": len(examples),
                                              "first_loss": losses[0], "last_loss": losses[-1]}))

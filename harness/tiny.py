"""The tiny test models: a 2-layer Llama with a tokenizer trained in-process (no hub), and the same
model fitted for a few seconds on fixture dialogues so that it answers in ``<A>...</A>``.

Both are deterministic: the tokenizer is trained on the fixture text in file order, weights come
from a fixed seed, and fitting runs a fixed number of steps in a fixed order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.mas.dialogue import NAMES, Dialogue, Utterance, start
from tasks.base import FIXTURES

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FITTED_TASKS = ("hotpotqa", "triviaqa", "cbt", "arc_c", "mmlu")
SEED = 1234


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


def fixture_dialogues() -> list[Dialogue]:
    """Scripted dialogues on the fixture train splits: the gold answer in <A> tags, agreement on
    the second answer (information exchange) or after the critic's turn (debate)."""
    from tasks import get_task

    dialogues = []
    for name in FITTED_TASKS:
        task = get_task(name)
        questions = task.load("train", online=False)
        for d in start(questions, task.setting):
            gold = d.question.golds[0]
            if task.setting == "information_exchange":
                fact = (d.question.contexts[0] or ("",))[0][:80]
                script = [f"{NAMES[0]}: {fact} <A>{gold}</A>", f"{NAMES[1]}: <A>{gold}</A>"]
            else:
                script = [f"{NAMES[0]}: <A>{gold}</A>", f"{NAMES[1]}: Correct.", f"{NAMES[0]}: <A>{gold}</A>"]
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


def build_fitted(out: Path, steps: int = 400, batch_size: int = 8, lr: float = 4e-3) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    build_random(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out)
    examples = training_examples(tokenizer, fixture_dialogues())
    # Debate answers are whole option texts: twice the exposure to memorise them.
    examples += [e for e in examples if len(e[0]) < 400]
    order = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = [examples[i] for i in torch.randint(len(examples), (batch_size,), generator=order).tolist()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    model.save_pretrained(out)
    (out / "fit.json").write_text(json.dumps({"steps": steps, "examples": len(examples),
                                              "first_loss": losses[0], "last_loss": losses[-1]}))

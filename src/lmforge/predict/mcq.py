"""Score a model on a multiple-choice benchmark the way MMLU is usually scored.

Each question is put after ``n_shot`` solved examples from the subject's dev split (drawn
with ``seed``), rendered with the config's template (``fewshot`` for base models: plain
text), and the model's next-token logits for the letters A, B, C and D decide its answer:
one forward pass per question, no generation. A prompt longer than the model's context
drops examples until it fits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from lmforge.conversation import Conversation, Message
from lmforge.predict.benchmarks import CHOICES, Benchmark, Question, Subject
from lmforge.predict.progress import SampleProgress

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lmforge.templates.interface import ChatTemplate


@dataclass(frozen=True)
class PromptStyle:
    """The benchmark's wording in one language."""

    intro: str  # before the first example; {subject} is the subject's display name
    choice: str = "\n{letter}. {text}"
    answer: str = "\nAnswer:"


PROMPT_STYLES = {
    "en": PromptStyle("The following are multiple choice questions (with answers) about {subject}.\n\n"),
    "zh": PromptStyle(
        "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", answer="\n答案："
    ),
}


@dataclass
class SubjectResult:
    subject: Subject
    predictions: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return 100 * sum(self.correct) / len(self.correct) if self.correct else 0.0


class ChoiceScorer:
    """A loaded model, its tokenizer and template, and the token ids of the four letters."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: ChatTemplate,
        style: PromptStyle,
        context_length: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.style = style
        self.context_length = context_length
        # the last token of each letter alone: what follows "Answer:" in the solved examples
        self.letter_ids = [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in CHOICES]

    def prompt_ids(self, question: Question, shots: list[Question], subject: Subject) -> list[int]:
        while True:
            messages: list[Message] = []
            for shot in shots:
                messages.append(Message(role="user", content=self._text(shot)))
                messages.append(Message(role="assistant", content=shot.answer))
            messages.append(Message(role="user", content=self._text(question)))
            messages[0] = Message(
                role="user", content=self.style.intro.format(subject=subject.name) + messages[0].content
            )
            ids = self.template.encode(
                self.tokenizer, Conversation(messages=messages), add_generation_prompt=True
            ).input_ids
            if len(ids) < self.context_length or not shots:
                return list(ids)[-self.context_length + 1 :]
            shots = shots[:-1]

    def _text(self, question: Question) -> str:
        options = "".join(
            self.style.choice.format(letter=letter, text=text)
            for letter, text in zip(CHOICES, question.choices, strict=True)
        )
        return question.question + options + self.style.answer

    @torch.inference_mode()
    def answers(self, prompts: list[list[int]]) -> list[str]:
        """The letter each prompt's next-token logits rank highest among A, B, C and D."""
        longest = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in prompts])
        mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in prompts])
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        last = torch.tensor([len(ids) - 1 for ids in prompts], device=device)
        letters = logits[torch.arange(len(prompts), device=device), last][:, self.letter_ids]
        return [CHOICES[int(i)] for i in letters.argmax(dim=-1)]


def evaluate(
    scorer: ChoiceScorer, benchmark: Benchmark, split: str, n_shot: int, batch_size: int, seed: int
) -> list[SubjectResult]:
    """Every subject's answers; the few-shot draw is seeded per subject, so runs repeat exactly."""
    work = [(subject, benchmark.questions(subject, split)) for subject in benchmark.subjects]
    results = []
    with SampleProgress(sum(len(q) for _, q in work), desc=f"eval {benchmark.name}_{split}") as progress:
        for subject, questions in work:
            dev = benchmark.questions(subject, "dev") if n_shot > 0 else []
            draw = random.Random(f"{seed}:{subject.key}")
            prompts = [
                scorer.prompt_ids(q, draw.sample(dev, min(n_shot, len(dev))), subject) for q in questions
            ]
            result = SubjectResult(subject)
            for low in range(0, len(prompts), max(1, batch_size)):
                batch = prompts[low : low + max(1, batch_size)]
                result.predictions += scorer.answers(batch)
                progress.advance(samples=len(batch))
            result.correct = [p == q.answer for p, q in zip(result.predictions, questions, strict=True)]
            results.append(result)
    return results


def category_accuracy(results: list[SubjectResult]) -> dict[str, tuple[int, float]]:
    """``{category: (questions, accuracy %)}`` over all questions of its subjects, with ``Average`` first."""
    pooled: dict[str, list[bool]] = {"Average": []}
    for result in results:
        pooled.setdefault(result.subject.category, []).extend(result.correct)
        pooled["Average"].extend(result.correct)
    return {name: (len(c), 100 * sum(c) / len(c) if c else 0.0) for name, c in pooled.items()}

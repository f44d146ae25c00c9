"""Chapter 12: prompts, in-context learning, chain of thought and soft prompts.

What a model does can be changed without changing (most of) its weights, by changing what it
reads. Each module measures one way of doing so, with a cached run (``llmcourse.course_runs``)
holding the figures that the book's pages show:

* ``templates``: prompt templates (the course's own format, a blank line, ``Q:``/``A:``, an
  arrow, the chat template), ``few_shot_prompt`` and ``choose_shots`` (same task, never the
  query or a held-out question), and exact match against the number of shots and the wording
  on the course checkpoints (run ``prompting-shots``);
* ``icl``: in-context learning that emerges: a tiny GPT trained on sequences of examples of a
  random permutation per sequence infers functions it never saw from its context; accuracy by
  the number of shots against the best possible predictor (run ``gpt-tiny-icl``);
* ``scratchpad``: multi-digit addition answered directly or after writing the column sums and
  carries, by two GPTs of the same size; accuracy by the number of digits (runs
  ``gpt-tiny-add-direct``, ``gpt-tiny-add-scratchpad``);
* ``soft_prompt``: prompt tuning, k trained vectors before the input of a frozen model
  (``SoftPrompt``), against few-shot prompting, LoRA and full fine-tuning (run
  ``soft-prompt-compare``).

Agents, the other half of the chapter, are in ``llmcourse.agents``. Each module runs on its
own: ``python -m llmcourse.prompting.icl --help``.
"""

from .soft_prompt import SoftPrompt
from .templates import TEMPLATES, PromptTemplate, choose_shots, few_shot_prompt

__all__ = ["TEMPLATES", "PromptTemplate", "SoftPrompt", "choose_shots", "few_shot_prompt"]

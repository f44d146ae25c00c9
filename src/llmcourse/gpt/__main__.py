"""``python -m llmcourse.gpt train|count``: pretrain a GPT-2 on an offline corpus (presets from
``tiny`` on a CPU to GPT-2 124M's shape on a GPU), or print parameter counts. The command
itself lives in ``llmcourse.causal_lm.cli``, shared with ``python -m llmcourse.llama``."""

import sys

from llmcourse.causal_lm.cli import main

if __name__ == "__main__":
    sys.exit(main("gpt"))

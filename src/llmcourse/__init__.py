"""llmcourse: reference PyTorch modules of the course "LLM principles, from the perceptron to RLHF".

Each chapter's concept lives in a module named after it (``llmcourse.perceptron``,
``llmcourse.backprop``, ...), runnable with ``python -m llmcourse.<module> --help``. The shared
core is small: ``runtime`` (device and seeds), ``training`` (a training loop), ``metrics`` (CSV
logs), ``plots`` (loss curves) and ``checkpoint`` (safe save and resume).
"""

__version__ = "0.1.0"

"""Chapter 13: model compression: quantization, pruning and distillation."""

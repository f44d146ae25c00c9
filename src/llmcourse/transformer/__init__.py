"""The Transformer: positions, encoder and decoder blocks, the encoder-decoder, and training.

* ``positional``: the sinusoidal encoding PE(pos, 2k) = sin(pos / 10000^(2k/d)),
  PE(pos, 2k+1) = cos(pos / 10000^(2k/d)), and learned position embeddings.
* ``blocks``: ``EncoderBlock`` and ``DecoderBlock`` (self-attention, cross-attention, FFN,
  residuals, LayerNorm after (post-norm, 2017) or before (pre-norm) each sublayer).
* ``model``: ``Seq2SeqTransformer`` (embeddings, encoder, decoder, output projection) and
  ``greedy_decode``.
* ``seq2seq_tasks``: digit reversal and sorting, generated on the fly, with a held-out set.
* ``fit``: teacher-forced training, exact match on held-out inputs.
* ``speed``: time per training step of an RNN, an LSTM and a Transformer layer.

Run ``python -m llmcourse.transformer --help`` for the command line.
"""

from .blocks import DecoderBlock, EncoderBlock, FeedForward
from .fit import PRESETS, Seq2SeqRun, exact_match, seq2seq_loss, train_seq2seq
from .model import Seq2SeqTransformer, TransformerConfig, cross_attention_weights, greedy_decode
from .positional import LearnedPositions, SinusoidalPositions, sinusoidal_encoding
from .seq2seq_tasks import (
    BOS,
    EOS,
    PAD,
    VOCAB_SIZE,
    Batch,
    DigitTask,
    decode,
    encode,
    encode_sources,
    make_batch,
)
from .speed import (
    plot_speed,
    rnn_vs_transformer,
    sequential_vs_parallel,
    time_training_step,
    training_flops,
)

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "PRESETS",
    "VOCAB_SIZE",
    "Batch",
    "DecoderBlock",
    "DigitTask",
    "EncoderBlock",
    "FeedForward",
    "LearnedPositions",
    "Seq2SeqRun",
    "Seq2SeqTransformer",
    "SinusoidalPositions",
    "TransformerConfig",
    "cross_attention_weights",
    "decode",
    "encode",
    "encode_sources",
    "exact_match",
    "greedy_decode",
    "make_batch",
    "plot_speed",
    "rnn_vs_transformer",
    "seq2seq_loss",
    "sequential_vs_parallel",
    "sinusoidal_encoding",
    "time_training_step",
    "train_seq2seq",
    "training_flops",
]

"""BERT, the encoder-only Transformer, with Hugging Face's ``BertForPreTraining`` names.

Read bottom-up: embeddings, self-attention, the post-norm block, the encoder with its pooler,
the two pretraining heads, the config, and the model that puts them together.

A sequence ``[CLS] A [SEP] B [SEP]`` enters as the sum of three embeddings: the token's, its
position's (learned, up to ``max_position_embeddings``) and its segment's (0 for sentence A
and its separator, 1 for B), then a LayerNorm. Each block is the Transformer's encoder block
of 2017 with the normalisation *after* each residual addition (post-norm):

    h = LayerNorm(x + Dropout(SelfAttention(x)))
    y = LayerNorm(h + Dropout(W2 GELU(W1 h)))

Attention is bidirectional: every token sees every token except padding. GELU is the exact
one, x * Phi(x) with Phi the normal CDF (erf), as BERT's code has it (GPT-2 uses the tanh
approximation). Two heads sit on top:

* the masked-language-model head: dense + GELU + LayerNorm, then a decoder to the vocabulary
  whose weight *is* the word-embedding matrix (tied), with a bias of its own;
* the next-sentence-prediction head: a linear layer with two outputs on the *pooled* output,
  tanh(W h_[CLS] + b), the final state of the ``[CLS]`` token through one more dense layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.hf_loading import check_config, load_into, read_source

# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """BERT's sizes, with the field names of Hugging Face's ``BertConfig``."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BertConfig:
        """A named size: ``tiny`` and ``small`` (CPU), ``bert-base`` and ``bert-large``
        (Devlin et al., 2018). Keyword arguments override fields, e.g. ``vocab_size=2000``."""
        if name not in PRESETS:
            raise ValueError(f"unknown BERT preset {name!r}; choose from {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        """The fields of ``data`` that a ``BertConfig`` has (an HF ``config.json`` has more)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


PRESETS: dict[str, BertConfig] = {
    "tiny": BertConfig(
        vocab_size=2000,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ),
    "small": BertConfig(
        vocab_size=8000,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=256,
    ),
    "bert-base": BertConfig(),
    "bert-large": BertConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}


def param_count(config: BertConfig) -> int:
    """The number of distinct parameters of ``Bert(config)``, from the sizes alone.

    With V the vocabulary, H the hidden size, I the feed-forward size, L the layers, P the
    positions and S the segment types:

    * embeddings: (V + P + S) H, plus a LayerNorm (2H);
    * each layer: Q, K, V and the output projection 4 (H^2 + H), the FFN 2 H I + I + H, two
      LayerNorms 4H;
    * pooler: H^2 + H;
    * MLM head: dense H^2 + H, LayerNorm 2H, output bias V (its weight is the embedding);
    * NSP head: 2H + 2.
    """
    v, h, i, n = (
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
    )
    embeddings = (v + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h
    pooler = h * h + h
    mlm = h * h + h + 2 * h + v
    nsp = 2 * h + 2
    return embeddings + n * layer + pooler + mlm + nsp


# --------------------------------------------------------------------------------------------
# Embeddings and the encoder block
# --------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention over the whole sequence (no causal mask), through
    ``scaled_dot_product_attention``; padded keys are masked out."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, heads, T, H / heads)
            return y.view(b, t, self.n_head, h // self.n_head).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query(x)),
            heads(self.key(x)),
            heads(self.value(x)),
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return out.transpose(1, 2).reshape(b, t, h)


class BertAddNorm(nn.Module):
    """A sublayer's exit: projection, dropout, residual, LayerNorm: LN(x + Dropout(W h)).

    Hugging Face has two copies of it under two names, ``BertSelfOutput`` after attention
    (W: hidden x hidden) and ``BertOutput`` after the FFN (W: intermediate x hidden); the
    parameter names (``dense``, ``LayerNorm``) are the same in both.
    """

    def __init__(self, config: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class BertAttention(nn.Module):
    """The attention sublayer: ``self`` (Q, K, V) and ``output`` (projection + Add & Norm)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertAddNorm(config, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """The first FFN layer and its exact (erf) GELU."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One post-norm encoder block: attention + Add & Norm, FFN + Add & Norm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAddNorm(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), h)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sequence summarised by its first token's final state."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """Embeddings, the encoder stack and the pooler; returns (hidden states, pooled)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        token_type_ids, mask = _check_inputs(self.config, input_ids, token_type_ids, attention_mask)
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return hidden, self.pooler(hidden)


def _check_inputs(
    config: BertConfig,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the inputs; return the segment ids (zeros by default) and the attention mask
    as booleans of shape (B, 1, 1, T), True where a key may be attended to (None: all)."""
    if input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError(
            f"input_ids must be a (batch, time) LongTensor, got {input_ids.dtype} of shape "
            f"{tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"sequence of {input_ids.shape[1]} tokens is longer than max_position_embeddings "
            f"({config.max_position_embeddings})"
        )
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    elif token_type_ids.shape != input_ids.shape:
        raise ValueError(
            f"token_type_ids has shape {tuple(token_type_ids.shape)}, input_ids "
            f"{tuple(input_ids.shape)}: they must be equal"
        )
    if attention_mask is None:
        return token_type_ids, None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
            f"{tuple(input_ids.shape)}: they must be equal"
        )
    keep = attention_mask.bool()
    if not keep.any(dim=1).all():
        raise ValueError("attention_mask masks every token of some sequence")
    return token_type_ids, keep[:, None, None, :]


# --------------------------------------------------------------------------------------------
# The pretraining heads
# --------------------------------------------------------------------------------------------


class BertPredictionHeadTransform(nn.Module):
    """dense + GELU + LayerNorm, before the MLM decoder."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """The MLM head: transform, then logits = h E^T + b with E the word-embedding matrix
    (``decoder.weight`` is tied to it by ``Bert``) and b = ``bias`` (``decoder.bias``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
"""Parameters that are another one under a second name (HF files may store them once)."""


def _init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, LayerNorm at (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------


class Bert(nn.Module):
    """BERT with both pretraining heads (HF's ``BertForPreTraining``):
    ``forward(input_ids, token_type_ids, attention_mask) -> (mlm_logits, nsp_logits)`` of
    shapes (B, T, V) and (B, 2). NSP class 0 means "B follows A", 1 "B is random"."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        _init_weights(self, config.initializer_range)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    @property
    def max_seq_len(self) -> int:
        return self.config.max_position_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.cls.predictions(hidden).float(), self.cls.seq_relationship(pooled).float()

    def num_params(self) -> int:
        """Distinct parameters (the tied decoder weight and bias counted once)."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_hf(cls, source: Any) -> Bert:
        """Load a Hugging Face ``BertForPreTraining``: a model instance (duck-typed: anything
        with ``.config`` and ``.state_dict()``) or a folder with ``config.json`` and
        ``model.safetensors``. Old checkpoints' LayerNorm names (``gamma``, ``beta``) are
        renamed; names that do not fit are listed in a ``ValueError``."""
        raw, state = read_source(source)
        config = hf_config(raw)
        state = {
            _modern_name(k): v
            for k, v in state.items()
            if k not in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
        }
        if "cls.predictions.bias" not in state and "cls.predictions.decoder.bias" in state:
            state["cls.predictions.bias"] = state.pop("cls.predictions.decoder.bias")
        return load_into(lambda: cls(config), state, tied=TIED)


class BertClassifier(nn.Module):
    """BERT for sequence classification (HF's ``BertForSequenceClassification`` names):
    dropout and a linear ``classifier`` on the pooled ``[CLS]`` state; returns (B, n_classes)
    logits."""

    def __init__(self, config: BertConfig, n_classes: int) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, n_classes)
        _init_weights(self, config.initializer_range)

    @classmethod
    def from_pretrained(cls, pretrained: Bert, n_classes: int) -> BertClassifier:
        """A classifier whose encoder and pooler start from a pretrained ``Bert`` (copied);
        only the classification layer is new."""
        model = cls(pretrained.config, n_classes)
        model.bert.load_state_dict(pretrained.bert.state_dict())
        return model.to(next(pretrained.parameters()).device)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(pooled)).float()


def _modern_name(name: str) -> str:
    """TF-era names (``LayerNorm.gamma``/``beta``) as today's (``weight``/``bias``)."""
    if name.endswith(".gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith(".beta"):
        return name[: -len("beta")] + "bias"
    return name


def hf_config(raw: dict[str, Any]) -> BertConfig:
    """A ``BertConfig`` from an HF config dict, refusing options our model does not have."""
    check_config(
        raw,
        "bert",
        ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"),
        {
            f"hidden_act {raw.get('hidden_act')!r} (only 'gelu')": raw.get("hidden_act", "gelu")
            != "gelu",
            "position_embedding_type other than 'absolute'": raw.get(
                "position_embedding_type", "absolute"
            )
            != "absolute",
            "a decoder (is_decoder)": bool(raw.get("is_decoder")),
        },
    )
    return BertConfig.from_dict(raw)

"""Tests of ``llmcourse.bert``: the model against Hugging Face's ``BertForPreTraining`` built
from a small random config, parameter counts, the masking rule's proportions, NSP pairs and
inputs, and a short pretraining + fine-tuning run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmcourse import bert
from llmcourse.bert import Bert, BertConfig, mask_tokens, param_count
from llmcourse.tokenizers import WordPieceTokenizer

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    type_vocab_size=2,
)


def hf_bert(**overrides):
    """A randomly initialised HF ``BertForPreTraining`` with every parameter perturbed (so a
    LayerNorm left at (1, 0) or a bias left at 0 would show)."""
    config = transformers.BertConfig(
        **{**TINY, **overrides}, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def inputs(batch: int = 3, length: int = 17, vocab: int = TINY["vocab_size"]):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(vocab, (batch, length), generator=g)
    segments = (torch.arange(length) >= length // 2).long().expand(batch, -1).clone()
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 11:] = 0  # padding at the end of two rows
    mask[2, 5:] = 0
    return ids, segments, mask


def test_same_logits_as_hugging_face() -> None:
    hf = hf_bert()
    ours = Bert.from_hf(hf)
    assert set(ours.state_dict()) == set(hf.state_dict()) - {
        "bert.embeddings.position_ids",
        "bert.embeddings.token_type_ids",
    }
    ids, segments, mask = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=mask)
        mlm, nsp = ours(ids, token_type_ids=segments, attention_mask=mask)
    assert mlm.shape == (3, 17, TINY["vocab_size"]) and nsp.shape == (3, 2)
    torch.testing.assert_close(mlm, expected.prediction_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    # the mask matters: without it the padded rows' logits change
    with torch.no_grad():
        unmasked, _ = ours(ids, token_type_ids=segments)
    assert not torch.allclose(unmasked[1], mlm[1], atol=1e-3)
    torch.testing.assert_close(unmasked[0], mlm[0])
    # the decoder is tied to the word embeddings, its bias to cls.predictions.bias
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


def test_from_a_saved_folder_and_legacy_names(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    hf = hf_bert()
    hf.save_pretrained(tmp_path / "saved")
    ours = Bert.from_hf(tmp_path / "saved")
    ids, segments, mask = inputs()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=mask)
        mlm, nsp = ours(ids, segments, mask)
    torch.testing.assert_close(mlm, expected.prediction_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    # TF-era checkpoints name LayerNorm parameters gamma/beta and store the decoder bias once
    old = tmp_path / "old"
    old.mkdir()
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in hf.state_dict().items()
        if k not in ("cls.predictions.decoder.weight", "cls.predictions.bias")
    }
    save_file({k: v.contiguous() for k, v in state.items()}, old / "model.safetensors")
    (old / "config.json").write_text(json.dumps(hf.config.to_dict()))
    with torch.no_grad():
        mlm_old, _ = Bert.from_hf(old)(ids, segments, mask)
    torch.testing.assert_close(mlm_old, mlm)


def test_from_hf_errors(tmp_path: Path) -> None:
    hf = hf_bert()

    class Truncated:
        config = hf.config

        def state_dict(self):
            state = dict(hf.state_dict())
            del state["bert.encoder.layer.1.output.dense.weight"]
            state["bert.extra.weight"] = torch.zeros(1)
            return state

    with pytest.raises(ValueError, match=r"missing.*layer\.1\.output\.dense\.weight"):
        Bert.from_hf(Truncated())
    with pytest.raises(ValueError, match=r"unexpected.*bert\.extra\.weight"):
        Bert.from_hf(Truncated())
    with pytest.raises(ValueError, match="hidden_act"):
        Bert.from_hf(hf_bert(hidden_act="relu"))
    with pytest.raises(FileNotFoundError):
        Bert.from_hf(tmp_path / "nothing")


def test_input_errors() -> None:
    model = Bert(BertConfig(**TINY))
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="LongTensor"):
        model(ids.float())
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        model(ids, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="masks every token"):
        model(ids, attention_mask=torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]))


def test_param_count() -> None:
    for overrides in ({}, {"num_hidden_layers": 3, "intermediate_size": 20, "vocab_size": 50}):
        config = BertConfig(**{**TINY, **overrides})
        hf = transformers.BertForPreTraining(transformers.BertConfig(**{**TINY, **overrides}))
        n_hf = sum(p.numel() for p in hf.parameters())  # tied tensors counted once
        assert param_count(config) == n_hf == Bert(config).num_params()
    # published sizes: BERT-base 110M, BERT-large 340M (Devlin et al., 2018)
    base = param_count(BertConfig.preset("bert-base"))
    large = param_count(BertConfig.preset("bert-large"))
    assert base == 110_106_428
    assert large == 336_226_108
    assert abs(base - 110e6) / 110e6 < 0.01 and abs(large - 340e6) / 340e6 < 0.02


def test_masking_proportions() -> None:
    special = [0, 1, 2, 3, 4]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 250), generator=g)
    ids[:, 0], ids[:, -1], ids[::3, 100:] = 2, 3, 0  # [CLS], [SEP], padding
    masked, labels = mask_tokens(ids, vocab_size=1000, mask_id=4, special_ids=special, generator=g)
    eligible = ~torch.isin(ids, torch.tensor(special))
    selected = labels != -100
    n = int(eligible.sum())
    assert not (selected & ~eligible).any()  # special tokens are never selected
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])  # nothing else changes
    k = int(selected.sum())
    # binomial: 15 % of n with a standard deviation sqrt(n p (1-p)); allow 5 of them
    assert abs(k - 0.15 * n) < 5 * (n * 0.15 * 0.85) ** 0.5
    to_mask = int((masked[selected] == 4).sum())
    unchanged = int((masked[selected] == ids[selected]).sum())
    other = k - to_mask - unchanged
    for count, p in ((to_mask, 0.8), (unchanged, 0.1 + 0.1 / 1000), (other, 0.1 - 0.1 / 1000)):
        assert abs(count - p * k) < 5 * (k * p * (1 - p)) ** 0.5, (count, p, k)


def test_masking_is_reproducible_and_checked() -> None:
    ids = torch.randint(5, 100, (4, 30))
    a = mask_tokens(
        ids, vocab_size=100, mask_id=4, special_ids=[0], generator=torch.Generator().manual_seed(3)
    )
    b = mask_tokens(
        ids, vocab_size=100, mask_id=4, special_ids=[0], generator=torch.Generator().manual_seed(3)
    )
    c = mask_tokens(
        ids, vocab_size=100, mask_id=4, special_ids=[0], generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    with pytest.raises(ValueError, match="LongTensor"):
        mask_tokens(ids.int(), vocab_size=100, mask_id=4, special_ids=[0])
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(ids, vocab_size=100, mask_id=100, special_ids=[0])


def test_nsp_pairs_and_inputs() -> None:
    docs = [[f"doc{d} sentence {i}." for i in range(5)] for d in range(6)]
    pairs = bert.nsp_pairs(docs, 2000, seed=0)
    where = {s: (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
    is_next = [p for p in pairs if p.label == bert.IS_NEXT]
    assert abs(len(is_next) - 1000) < 5 * 500**0.5
    for p in pairs:
        (da, ia), (db, ib) = where[p.first], where[p.second]
        assert (da == db and ib == ia + 1) if p.label == bert.IS_NEXT else da != db
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
    inputs = bert.BertInputs(WordPieceTokenizer(vocab), max_len=8)
    ids, segments = inputs.encode("a b", "c")
    assert ids == [2, 5, 6, 3, 7, 3] and segments == [0, 0, 0, 0, 1, 1]
    ids, segments = inputs.encode("a a a a a a", "b b")  # longer sentence cut first
    assert ids == [2, 5, 5, 5, 3, 6, 6, 3] and segments == [0] * 5 + [1] * 3
    x, s, m = inputs.batch([inputs.encode("a"), inputs.encode("a b", "c")])
    assert x.tolist()[0] == [2, 5, 3, 0, 0, 0] and m.tolist()[0] == [1, 1, 1, 0, 0, 0]
    assert s.tolist()[1] == [0, 0, 0, 0, 1, 1]


def test_pretraining_lowers_the_mlm_loss_and_saves(tmp_path: Path) -> None:
    cfg = bert.PretrainConfig(
        vocab_size=150, tokenizer_chars=5_000, max_len=24, n_pairs=400, batch_size=8,
        steps=30, lr=3e-3, warmup_steps=3, eval_every=15,
    )  # fmt: skip
    run = bert.pretrain(cfg, out=tmp_path, device="cpu", progress=False)
    losses = run.history["val_mlm_loss"]
    # a random network guesses about uniformly: loss ln(V); after 30 steps it is far below
    assert losses[-1] < math.log(len(run.tokenizer.vocab)) - 1.0, losses
    assert run.history["eval_step"] == [15.0, 30.0]
    model, tok = bert.load_pretrained(tmp_path)
    assert tok.vocab == run.tokenizer.vocab
    for name in ("metrics.csv", "loss.png", "vocab.txt", "train_state.pt"):
        assert (tmp_path / name).is_file()
    ids = torch.tensor([run.inputs.encode("the object is a name")[0]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], run.model(ids)[0])


def test_command_line(tmp_path: Path, capsys) -> None:
    from llmcourse.bert.__main__ import main

    for command in ("pretrain", "finetune"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--pretrained" in capsys.readouterr().out
    assert main(["finetune", "--pretrained", str(tmp_path / "none")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_documents_and_task_lines() -> None:
    text = (
        "Title one\n*********\n\nFirst sentence is here. Second one follows it.\n\n"
        "   indented_code(is_skipped)\n\nA third sentence ends! Is a fourth sentence here?\n"
        "Title two\n=========\n\nOnly one sentence in this topic.\n"
    )
    assert bert.documents(text) == [
        [
            "First sentence is here.",
            "Second one follows it.",
            "A third sentence ends!",
            "Is a fourth sentence here?",
        ]
    ]
    from llmcourse.bert.data import is_python_line

    assert is_python_line("for callback in self._done_callbacks:")
    assert is_python_line("self.traps = dc.traps.copy()")
    assert not is_python_line("Return the total number of bytes which were sent.")
    assert not is_python_line('"""Encode a bytestring into a bytes object."""')
    assert not is_python_line("# a comment that compiles")


def test_finetuning_starts_from_the_pretrained_encoder() -> None:
    pretrained = Bert(BertConfig(**TINY))
    clf = bert.BertClassifier.from_pretrained(pretrained, 3)
    for name, tensor in pretrained.bert.state_dict().items():
        assert torch.equal(clf.bert.state_dict()[name], tensor), name
    ids = torch.randint(TINY["vocab_size"], (2, 7))
    assert clf(ids).shape == (2, 3)
    with pytest.raises(ValueError, match="exactly one"):
        bert.finetune(bert.FinetuneConfig(), None)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    cfg = bert.FinetuneConfig(n_train=16, n_test=20, steps=4, eval_every=2, max_len=16)
    run = bert.finetune(
        cfg,
        bert.BertInputs(WordPieceTokenizer(vocab, lowercase=True), cfg.max_len),
        config=BertConfig(**{**TINY, "vocab_size": len(vocab)}),
        device="cpu",
        progress=False,
    )
    assert 0.0 <= run.accuracy <= 1.0 and run.history["eval_step"] == [2.0, 4.0]

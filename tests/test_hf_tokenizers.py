"""Our tokenizers against Hugging Face's ``tokenizers`` on the same files.

WordPiece: a vocabulary trained by ``tokenizers``' own WordPiece trainer, written as
``vocab.txt``, read by ``WordPieceTokenizer.load`` and by a ``tokenizers.Tokenizer`` assembled
from BertNormalizer + BertPreTokenizer + WordPiece (the pipeline of HF's fast BERT
tokenizer); both must give the same ids. BPE: a byte-level BPE trained by ``tokenizers``,
saved as ``vocab.json`` + ``merges.txt``, read by ``BPETokenizer.from_hf_files``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmcourse.tokenizers import BPETokenizer, WordPieceTokenizer, bytes_to_unicode, split_words
from llmcourse.tokenizers import wordpiece as W

tokenizers = pytest.importorskip("tokenizers")

TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. It's on_click(self, event) -> None; "
    "x = a_b + c^2 * $total / 100 % 7 ~ `code` @decorator #comment {key: [1, 2]} <tag> | & ! ? "
    "Café naïve résumé Ångström façade Straße ΟΔΟΣ οδός Ελληνικά Русский текст. "
    "我爱北京天安门，中华人民共和国万岁！自然语言处理。日本語のテキスト、カタカナ。한국어 문장. "
    "Emoji 😀👍🎉 and numbers 3.14159 2024-11-25 1,000,000. "
) * 20

SAMPLES = [
    "Hello, World! It's on_click(self) -> $5.00 ^_^ `code` a+b=c",
    "snake_case_name and __dunder__ and CamelCase and x86_64",
    "Café naïve résumé ÅNGSTRÖM Straße",
    "我爱北京天安门，你好！ mixed中文and English 自然语言处理",
    "ΟΔΟΣ οδός",
    "tabs\tand\nnewlines\r\n and  double  spaces\u00a0nbsp\u3000ideographic space",
    "zero\u200bwidth soft\u00adhyphen control\x07bell\x00nul \ufffd replacement",
    "x" * 150 + " long words become [UNK]",
    "",
]

# Blocks whose characters are assigned in every Unicode version since 2017, so that Python's
# tables and the ones compiled into ``tokenizers`` agree on them.
POOL = [
    *range(0x00, 0x250),  # controls, ASCII, Latin-1, Latin Extended-A/B
    *range(0x370, 0x378),
    *range(0x391, 0x3CA),  # Greek
    *range(0x400, 0x460),  # Cyrillic
    *range(0x300, 0x370),  # combining marks
    *range(0x2000, 0x2065),  # general punctuation, spaces, zero-width characters
    *range(0x3000, 0x3040),  # CJK symbols and punctuation
    *range(0x3041, 0x3097),  # hiragana
    *range(0x4E00, 0x4F00),  # CJK ideographs
    *range(0xAC00, 0xAC40),  # hangul
    *range(0xFF01, 0xFF5F),  # full-width forms
    *range(0x1F600, 0x1F650),  # emoji
    0x20000,
    0x2A700,
    0xE000,  # private use
]


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(chr(rng.choice(POOL)) for _ in range(rng.randrange(1, 30))) for _ in range(n)]


# ------------------------------------------------------------------------------------------
# BERT's WordPiece
# ------------------------------------------------------------------------------------------


def hf_bert_tokenizer(vocab_file: Path, lowercase: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def wordpiece_pair(request, tmp_path_factory):
    """(ours, Hugging Face's) read from one vocab.txt trained by HF's WordPiece trainer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    lowercase = request.param
    trainer_tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    trainer_tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=list(W.SPECIAL_TOKENS), show_progress=False
    )
    trainer_tok.train_from_iterator([TRAIN_TEXT], trainer)
    vocab = sorted(trainer_tok.get_vocab().items(), key=lambda item: item[1])
    path = tmp_path_factory.mktemp("wordpiece") / "vocab.txt"
    path.write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    return WordPieceTokenizer.load(path, lowercase=lowercase), hf_bert_tokenizer(path, lowercase)


def test_wordpiece_matches_hf_on_chosen_text(wordpiece_pair) -> None:
    ours, hf = wordpiece_pair
    for text in [*SAMPLES, TRAIN_TEXT[:600]]:
        expected = hf.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected.ids, (text, expected.tokens, ours.tokenize(text))


def test_wordpiece_matches_hf_on_random_unicode(wordpiece_pair) -> None:
    ours, hf = wordpiece_pair
    for text in random_strings(300, seed=1):
        expected = hf.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected.ids, (text, expected.tokens, ours.tokenize(text))


def test_words_as_bert_splits_them() -> None:
    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    for text in [*SAMPLES, *random_strings(200, seed=2)]:
        expected = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
        assert split_words(text, lowercase=True) == expected, text
    # what the previous splitting (runs of \w) got wrong
    assert split_words("on_click") == ["on", "_", "click"]
    assert split_words("中文abc") == ["中", "文", "abc"]
    assert split_words("$a+b^c`d") == ["$", "a", "+", "b", "^", "c", "`", "d"]
    assert split_words("Ôn ÉTÉ", lowercase=True) == ["on", "ete"]
    assert split_words("Ôn ÉTÉ", lowercase=True, strip_accents=False) == ["ôn", "été"]
    assert split_words("Ôn ÉTÉ") == ["Ôn", "ÉTÉ"]


def test_train_wordpiece_uses_bert_words() -> None:
    tok = W.train_wordpiece("on_click 中文 on_click", 40, lowercase=True)
    assert "_" in tok.vocab and "中" in tok.vocab and "on_click" not in tok.vocab
    assert tok.tokenize("ON_CLICK") == ["on", "_", "click"]


# ------------------------------------------------------------------------------------------
# GPT-2's byte-level BPE files
# ------------------------------------------------------------------------------------------


def test_bytes_to_unicode_is_gpt2s() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert table[0] == "Ā" and table[0xAD] == "Ń" and table[0xFF] == "ÿ"
    from tokenizers.pre_tokenizers import ByteLevel

    assert set(table.values()) == set(ByteLevel.alphabet())


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory) -> Path:
    """vocab.json + merges.txt of a byte-level BPE trained by ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAIN_TEXT], trainer)
    folder = tmp_path_factory.mktemp("bpe")
    tok.model.save(str(folder))
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_bpe_from_hf_files_matches_hf(bpe_files: Path) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(bpe_files / "tokenizer.json"))
    ours = BPETokenizer.from_hf_files(bpe_files / "vocab.json", bpe_files / "merges.txt")
    assert ours.n_vocab == hf.get_vocab_size()
    assert ours.special_tokens == {"<|endoftext|>": 0}
    for text in [*SAMPLES, TRAIN_TEXT[:800], *random_strings(300, seed=3)]:
        ids = ours.encode(text)
        assert ids == hf.encode(text).ids, text
        assert ours.decode(ids) == text
    assert ours.encode("a<|endoftext|>b", allowed_special="all")[1] == 0


def test_bpe_from_hf_files_uses_the_merge_order(tmp_path: Path) -> None:
    """GPT-2 merges the first-listed *pair*; a rule that ranks the merged token would merge
    a + bc below (``abc`` is a token), GPT-2 does not: (a, bc) is not a listed merge."""
    u = bytes_to_unicode()
    vocab = {u[b]: b for b in range(256)}
    vocab.update({"bc": 256, "ab": 257, "abc": 258})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nb c\na b\nab c\n", encoding="utf-8")
    tok = BPETokenizer.from_hf_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.encode("abc") == [ord("a"), 256]
    assert tok.encode("abx") == [257, ord("x")]
    assert tok.encode(" abc") == [ord(" "), ord("a"), 256]


def test_bpe_from_hf_files_errors(tmp_path: Path, bpe_files: Path) -> None:
    vocab, merges = bpe_files / "vocab.json", bpe_files / "merges.txt"
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        BPETokenizer.from_hf_files(tmp_path / "nope.json", merges)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        BPETokenizer.from_hf_files(tmp_path / "bad.json", merges)
    (tmp_path / "small.json").write_text(json.dumps({"a": 0, "b": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a byte-level vocabulary"):
        BPETokenizer.from_hf_files(tmp_path / "small.json", merges)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ zzzz\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        BPETokenizer.from_hf_files(vocab, tmp_path / "merges.txt")
    tok = BPETokenizer.from_hf_files(vocab, merges)
    with pytest.raises(ValueError, match="Hugging Face files"):
        tok.save(tmp_path / "course.json")

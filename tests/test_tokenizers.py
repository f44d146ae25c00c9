"""Tests of `llmcourse.tokenizers`: BPE against tiktoken and hand-worked merges, WordPiece
against the worked example of its usual description, and the offline tiktoken cache."""

from __future__ import annotations

import hashlib
import inspect
import json
import random
from pathlib import Path

import pytest
import tiktoken

from llmcourse import data
from llmcourse.tokenizers import bpe as B
from llmcourse.tokenizers import pretrained as P
from llmcourse.tokenizers import wordpiece as W
from llmcourse.tokenizers.__main__ import main as cli

HELD_OUT = (
    "Tokenizers turn text into integers; they don't care about meaning.\n"
    "中华人民共和国 张麻子正在打李麻子。我爱吃苹果！\n"
    "Emoji: 😀🎉👩‍👩‍👧 and accents: naïve café, Ünïcödé — 12345678 tokens?\n"
    "    indented code(x, y) -> None:  \r\n\ttabs\u00a0and nbsp   \n\n"
)


@pytest.fixture(scope="module")
def trained() -> B.BPETokenizer:
    train, _ = data.load_corpus("pydoc-topics").train_val_split(0.1, seed=0)
    tok, _ = B.train_bpe(train[:150_000], 700, special_tokens=["<|endoftext|>", "<|pad|>"])
    return tok


@pytest.fixture(scope="module")
def validation() -> str:
    return data.load_corpus("pydoc-topics").train_val_split(0.1, seed=0)[1][:30_000]


def random_text(rng: random.Random, n: int) -> str:
    """Random Unicode text: ASCII, Latin, CJK, emoji and whitespace (no lone surrogates)."""
    pools = [
        (0x20, 0x7E), (0xC0, 0x17F), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F), (0x3000, 0x303F),
    ]  # fmt: skip
    out = []
    for _ in range(n):
        if rng.random() < 0.15:
            out.append(rng.choice(" \n\t  "))
        else:
            lo, hi = rng.choice(pools)
            out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def test_pattern_is_the_one_tiktoken_uses_for_cl100k() -> None:
    import tiktoken_ext.openai_public as public

    assert B.GPT4_PATTERN in inspect.getsource(public.cl100k_base)
    text = "I'm here, aren't you? 12345 apples\n\n  x"
    assert "".join(B.pretokenize(text)) == text
    assert B.pretokenize(text)[:4] == ["I", "'m", " here", ","]
    assert "123" in B.pretokenize(text) and "45" in B.pretokenize(text)


def test_first_merges_by_hand() -> None:
    # "aaabdaaabac": aa occurs 4 times (overlapping pairs counted), ab twice: merge aa -> 256.
    # Then (256, a) and (a, b) both occur twice; ties go to the smaller pair (97, 98) -> 257.
    # Then (256, 257) twice -> 258; every other pair occurs once, below min_frequency 2.
    tok, log = B.train_bpe("aaabdaaabac", 1000)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert log.pair_counts == [4, 2, 2]
    assert tok.vocab[256:] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]


def test_merge_priority_encoding_agrees_with_tiktoken_rule(
    trained: B.BPETokenizer, validation: str
) -> None:
    assert B.apply_merges(list(b"aab"), [(97, 97), (97, 98)]) == [256, 98]
    assert B.apply_merges(list(b"aab"), [(97, 98), (97, 97)]) == [97, 256]
    for piece in set(B.pretokenize(validation + HELD_OUT)):
        raw = piece.encode()
        assert B.apply_merges(list(raw), trained.merges) == trained.encode_piece(raw), piece


def test_count_pairs_and_merge_by_hand() -> None:
    assert B.count_pairs([1, 2, 1, 2, 2]) == {(1, 2): 2, (2, 1): 1, (2, 2): 1}
    assert B.merge([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_and_naive_training_learn_the_same_merges(seed: int) -> None:
    rng = random.Random(seed)
    words = ["low", "lower", "newest", "widest", "中文", "😀", "aaaa", "the", " the"]
    text = " ".join(rng.choice(words) for _ in range(400)) + random_text(rng, 200)
    fast, fast_log = B.train_bpe(text, 400)
    slow, slow_log = B.train_bpe_naive(text, 400)
    assert fast.merges == slow.merges and fast_log.pair_counts == slow_log.pair_counts
    assert len(fast.merges) > 20


def test_incremental_matches_naive_on_real_text() -> None:
    text = data.load_corpus("pydoc-topics").text[:40_000]
    fast, _ = B.train_bpe(text, 256 + 60)
    slow, _ = B.train_bpe_naive(text, 256 + 60)
    assert fast.merges == slow.merges


def test_tiktoken_encodes_like_our_encoder_on_held_out_text(
    trained: B.BPETokenizer, validation: str
) -> None:
    enc = trained.to_tiktoken()
    for text in (validation, HELD_OUT):
        ours = trained.encode(text)
        assert ours == enc.encode_ordinary(text)
        assert trained.decode(ours) == text
        assert enc.decode(ours) == text
    rng = random.Random(7)
    for _ in range(20):
        text = random_text(rng, 300)
        assert trained.encode(text) == enc.encode_ordinary(text)
        assert trained.decode(trained.encode(text)) == text
    assert trained.n_vocab == enc.n_vocab
    assert len(trained.encode(validation)) < 0.5 * len(validation.encode())  # it compresses


def test_special_tokens(trained: B.BPETokenizer) -> None:
    enc = trained.to_tiktoken()
    text = "first<|endoftext|>second <|pad|>"
    eot, pad = trained.special_tokens["<|endoftext|>"], trained.special_tokens["<|pad|>"]
    assert eot == len(trained.vocab) and pad == eot + 1
    ids = trained.encode(text, allowed_special="all")
    assert ids == enc.encode(text, allowed_special="all")
    assert ids.count(eot) == 1 and ids[-1] == pad
    only_eot = trained.encode(text, allowed_special={"<|endoftext|>"})
    assert only_eot == enc.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert pad not in only_eot
    assert trained.encode(text) == enc.encode_ordinary(text)  # as plain text by default
    assert trained.decode(ids) == text
    with pytest.raises(ValueError, match="not special tokens"):
        trained.encode(text, allowed_special={"<|nope|>"})


def test_decoding_part_of_a_character(trained: B.BPETokenizer) -> None:
    ids = trained.encode("中")
    assert trained.decode_bytes(ids) == "中".encode()
    assert len(ids) > 1 and trained.decode(ids[:-1]) == "\ufffd"  # an incomplete character
    assert trained.decode_bytes([0xE4]) == b"\xe4"
    assert trained.token_strings([0xE4]) == ["\\xe4"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        trained.decode([10**6])


def test_save_and_load(trained: B.BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    trained.save(path)
    again = B.BPETokenizer.load(path)
    assert again.merges == trained.merges and again.special_tokens == trained.special_tokens
    assert again.encode(HELD_OUT, allowed_special="all") == trained.encode(
        HELD_OUT, allowed_special="all"
    )


def test_loading_a_corrupt_file_says_what_is_wrong(trained: B.BPETokenizer, tmp_path: Path) -> None:
    good = trained.to_dict()
    cases = {
        "not json": ("{merges:", "invalid JSON"),
        "other format": (json.dumps({"format": "x"}), "not a saved tokenizer"),
        "version": (json.dumps(good | {"version": 99}), "unsupported"),
        "future id": (json.dumps(good | {"merges": [[300, 1]]}), "does not exist yet"),
        "bad merge": (json.dumps(good | {"merges": [[1, "a"]]}), r"\[int, int\]"),
        "tokens": (json.dumps(good | {"tokens": good["tokens"][::-1]}), "corrupt"),
        "pattern": (json.dumps(good | {"pattern": "(unclosed"}), "invalid pre-tokenization"),
        "special": (json.dumps(good | {"special_tokens": {"<s>": 3}}), "needs an id"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=message):
            B.BPETokenizer.load(path)
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        B.BPETokenizer.load(tmp_path / "missing.json")


def test_training_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        B.train_bpe("", 300)
    with pytest.raises(ValueError, match="at least 256"):
        B.train_bpe("abc", 100)
    with pytest.raises(ValueError, match="at least 256"):
        B.train_bpe_naive("abc", 100)


# ------------------------------------------------------------------------------------------
# WordPiece
# ------------------------------------------------------------------------------------------

# The usual worked example: "hug" 10 times, "pug" 5, "pun" 12, "bun" 4, "hugs" 5.
WORDS = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
EXAMPLE = " ".join(w for w, n in WORDS.items() for _ in range(n))


def test_wordpiece_scores_by_hand() -> None:
    splits = {w: W.word_to_pieces(w) for w in WORDS}
    assert splits["hugs"] == ["h", "##u", "##g", "##s"]
    scores = W.pair_scores(splits, WORDS)
    # freq(##u) = 10+5+12+4+5 = 36, freq(##g) = 20, freq(##s) = 5, freq(h) = 15
    assert scores[("##g", "##s")] == pytest.approx(5 / (20 * 5))
    assert scores[("h", "##u")] == pytest.approx(15 / (15 * 36))
    assert scores[("##u", "##g")] == pytest.approx(20 / (36 * 20))
    assert max(scores, key=scores.get) == ("##g", "##s")


def test_wordpiece_training_by_hand() -> None:
    tok = W.train_wordpiece(EXAMPLE, vocab_size=5 + 7 + 2)
    assert tok.vocab[:5] == list(W.SPECIAL_TOKENS)
    assert tok.vocab[5:12] == ["##g", "##n", "##s", "##u", "b", "h", "p"]  # sorted
    # first ##gs (1/20), then hu: h+##u = 15/(15*36) = 1/36 beats every other pair
    assert tok.merges == [("##g", "##s"), ("h", "##u")]
    assert tok.vocab[12:] == ["##gs", "hu"]
    assert tok.tokenize("hugs bug") == ["hu", "##gs", "b", "##u", "##g"]
    assert tok.tokenize("mug") == ["[UNK]"]


def test_wordpiece_greedy_longest_match() -> None:
    vocab = ["[UNK]", "un", "##aff", "##able", "a", "##a", "##b", "##l", "##e", "##f", "u"]
    tok = W.WordPieceTokenizer(vocab)
    assert tok.encode_word("unaffable") == ["un", "##aff", "##able"]
    assert tok.encode_word("ufa") == ["u", "##f", "##a"]
    assert tok.encode_word("uxa") == ["[UNK]"]  # nothing matches at "x": the whole word
    assert tok.tokenize("unaffable, un") == ["un", "##aff", "##able", "[UNK]", "un"]
    assert tok.decode(tok.encode("unaffable un")) == "unaffable un"


def test_wordpiece_save_load_and_errors(tmp_path: Path) -> None:
    tok = W.train_wordpiece(EXAMPLE, 14)
    tok.save(tmp_path / "vocab.txt")
    assert W.WordPieceTokenizer.load(tmp_path / "vocab.txt").vocab == tok.vocab
    (tmp_path / "bad.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"unknown token"):
        W.WordPieceTokenizer.load(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="smaller than"):
        W.train_wordpiece(EXAMPLE, 5)
    with pytest.raises(ValueError, match="no words"):
        W.train_wordpiece("   ", 100)


# ------------------------------------------------------------------------------------------
# tiktoken's named encodings, offline
# ------------------------------------------------------------------------------------------


def test_cache_path_is_the_sha1_of_the_url(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url = next(iter(P.ENCODING_FILES["cl100k_base"]))
    assert P.cache_path(url) == tmp_path / hashlib.sha1(url.encode()).hexdigest()
    import tiktoken.load

    assert "hashlib.sha1(blobpath.encode()).hexdigest()" in inspect.getsource(tiktoken.load)


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_missing_encoding_gets_a_clear_message(monkeypatch, tmp_path: Path, name: str) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert not P.is_cached(name)
    with pytest.raises(P.EncodingUnavailable, match=f"{name}.*not available offline") as err:
        P.cached_encoding(name)
    assert str(tmp_path) in str(err.value) and "TIKTOKEN_CACHE_DIR" in str(err.value)


def test_caching_switched_off_and_unknown_names(monkeypatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(P.EncodingUnavailable, match="caching is switched off"):
        P.cached_encoding("cl100k_base")
    with pytest.raises(ValueError, match="unknown encoding"):
        P.cached_encoding("gpt5")


def test_a_cached_file_is_used_without_download(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    content = b"fake ranks"
    url = "https://example.invalid/fake.tiktoken"
    monkeypatch.setitem(P.ENCODING_FILES, "fake", {url: hashlib.sha256(content).hexdigest()})
    P.cache_path(url).write_bytes(content)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: f"loaded {name}")
    assert P.cached_encoding("fake") == "loaded fake"
    P.cache_path(url).write_bytes(b"corrupted")
    with pytest.raises(P.EncodingUnavailable):
        P.cached_encoding("fake")


def test_command_line(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 200 + "中华人民 " * 50)
    out = tmp_path / "bpe.json"
    assert cli(["train", str(corpus), "--vocab-size", "300", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli(["encode", str(out), "the cat 中华"]) == 0
    report = json.loads(capsys.readouterr().out)
    tok = B.BPETokenizer.load(out)
    assert (
        report["ids"] == tok.encode("the cat 中华") and tok.decode(report["ids"]) == "the cat 中华"
    )
    bench = tmp_path / "bench.json"
    assert cli(["benchmark", str(corpus), "--vocab-size", "300", "--naive-merges", "5",
                "--json", str(bench)]) == 0  # fmt: skip
    result = json.loads(bench.read_text())
    assert result["compared_merges"] == 5 and result["speedup"] > 0
    assert cli(["train", str(corpus), "--kind", "wordpiece", "--vocab-size", "60",
                "--out", str(tmp_path / "vocab.txt")]) == 0  # fmt: skip
    with pytest.raises(SystemExit):
        cli(["encode", str(tmp_path / "missing.json"), "x"])

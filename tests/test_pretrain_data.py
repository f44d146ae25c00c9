"""Tests of `llmcourse.pretrain`'s data side: documents, quality filters, privacy scrubbing,
exact and MinHash/LSH de-duplication, mixtures, token files and the `data` command."""

from __future__ import annotations

import inspect
import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from llmcourse import data as D
from llmcourse.pretrain import (
    MinHasher,
    NearDedupConfig,
    QualityConfig,
    TokenFile,
    TokenFileWriter,
    candidate_probability,
    choose_bands,
    corpus_documents,
    describe_tokenizer,
    estimated_jaccard,
    exact_duplicates,
    jaccard,
    lsh_candidates,
    near_duplicates,
    plan_mixture,
    quality_filter,
    scrub_pii,
    shingle_hashes,
    split_paragraphs,
    token_dtype,
    write_token_file,
)
from llmcourse.pretrain import filters as F
from llmcourse.pretrain.__main__ import main
from llmcourse.pretrain.dedup import MERSENNE_61, mulmod61
from llmcourse.pretrain.tokenfile import sidecar_path
from llmcourse.tokenizers import train_bpe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_bpe():
    """A BPE of 300 ids plus <|endoftext|>, trained in milliseconds on three help topics."""
    from pydoc_data.topics import topics

    text = topics["if"] + topics["while"] + topics["for"]
    return train_bpe(text, 300, special_tokens=["<|endoftext|>"])[0]


class CharTokenizer:
    """Code points as ids, for any vocabulary size: no ``to_dict``, so it is fingerprinted by
    probing, and ids above 65535 show whether a file kept all 32 bits."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.eot_token = vocab_size - 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join("<|endoftext|>" if i == self.eot_token else chr(i) for i in ids)


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def test_pydoc_topics_documents_rebuild_the_corpus() -> None:
    docs = corpus_documents("pydoc-topics")
    assert len(docs) > 50
    assert "\n\n".join(d + "\n" for d in docs) == D.load_corpus("pydoc-topics").text


def test_stdlib_code_documents_are_whole_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import json as json_module
    import textwrap as textwrap_module

    chosen = [Path(inspect.getsourcefile(m)) for m in (json_module, textwrap_module)]
    monkeypatch.setattr(D, "stdlib_files", lambda: chosen)
    docs = corpus_documents("stdlib-code")
    assert docs == [p.read_text(encoding="utf-8").strip() for p in chosen]


def test_generated_and_local_documents(tmp_path: Path) -> None:
    lines = corpus_documents("arithmetic")
    assert len(lines) == 20_000 and all("=" in x and "\n" not in x for x in lines)
    pairs = corpus_documents("instructions")
    assert len(pairs) == 10_000 and all(p.startswith("### Instruction:\n") for p in pairs)
    (tmp_path / "b.md").write_text("second\n\nfile\n")
    (tmp_path / "a.txt").write_text("first file\n")
    assert corpus_documents(tmp_path) == ["first file", "second\n\nfile"]
    assert split_paragraphs("one\nline\n \n\ntwo\n\n\n") == ["one\nline", "two"]
    with pytest.raises(ValueError, match="unknown corpus"):
        corpus_documents("no-such-corpus")


# --------------------------------------------------------------------------------------------
# Quality filters and privacy
# --------------------------------------------------------------------------------------------


def test_each_measure_on_hand_made_examples() -> None:
    assert F.word_count("a b  c\nd") == 4
    assert F.mean_word_length("ab abcd") == 3.0 and F.mean_word_length("") == 0.0
    assert F.symbol_ratio("#a #b ... c") == 3 / 4
    assert F.symbol_ratio("#") == 1.0 and F.symbol_ratio("") == 0.0
    assert F.repeated_line_fraction("x\ny\n  x\n\nx") == 2 / 4
    assert F.repeated_line_fraction("") == 0.0
    assert F.alpha_fraction("ab 12") == 0.5 and F.alpha_fraction("日本 語!") == 3 / 4


def test_quality_filter_removes_each_kind_for_its_reason() -> None:
    good = " ".join(["The interpreter reads each statement and runs it in order."] * 3)
    cases = {
        "length": "Too short to teach anything.",
        "mean_word_length": " ".join(["a b c d"] * 10),
        "symbol_ratio": good + " #tag" * 5,
        "repeated_lines": "\n".join(["Click here to subscribe to our newsletter today."] * 10),
        "alpha_fraction": " ".join(["1234.5678 = 9999.0000;"] * 20),
    }
    for reason, text in cases.items():
        rules = F.quality_rules(QualityConfig())
        assert F.rejection_reason(text, rules) == reason, reason
    docs = [good, *cases.values(), good + " Again."]
    kept, report = quality_filter(docs)
    assert kept == [0, len(docs) - 1]
    assert report.removed == dict.fromkeys(cases, 1)
    assert report.kept == 2 and report.documents_in == len(docs)
    assert report.examples["length"] == cases["length"]
    lenient = QualityConfig(min_words=1, max_repeated_line_fraction=1.0, max_symbol_ratio=1.0,
                            min_mean_word_length=1, min_alpha_fraction=0.0)  # fmt: skip
    assert quality_filter(docs, lenient)[1].kept == len(docs)
    with pytest.raises(ValueError, match="fraction"):
        QualityConfig(min_alpha_fraction=1.5)


def test_scrub_pii() -> None:
    text = "Write to Guido.van+x@python.org (server 192.168.0.1). Version 1.2.3.4.5, 10.0.0.256"
    scrubbed, counts = scrub_pii(text)
    assert scrubbed == "Write to <EMAIL> (server <IP>). Version 1.2.3.4.5, 10.0.0.256"
    assert counts == {"<EMAIL>": 1, "<IP>": 1}


# --------------------------------------------------------------------------------------------
# De-duplication
# --------------------------------------------------------------------------------------------


def test_exact_duplicates_after_normalisation() -> None:
    docs = ["Hello  World\n", "hello world", "Hello, world", "ＨＥＬＬＯ world", "other"]
    kept, removed = exact_duplicates(docs)
    assert kept == [0, 2, 4] and removed == {1: 0, 3: 0}


def test_mulmod61_is_exact() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, MERSENNE_61, 2000, dtype=np.uint64)
    x = rng.integers(0, MERSENNE_61, 2000, dtype=np.uint64)
    a[:2], x[:2] = MERSENNE_61 - 1, [MERSENNE_61 - 1, 0]
    got = mulmod61(a, x)
    assert [int(g) for g in got] == [
        int(p) * int(q) % MERSENNE_61 for p, q in zip(a, x, strict=True)
    ]
    hasher = MinHasher(16, seed=3)
    values = rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64, endpoint=True)
    want = [[(int(p) * (int(v) % MERSENNE_61) + int(q)) % MERSENNE_61 for v in values[:50]]
            for p, q in zip(hasher.a, hasher.b, strict=True)]  # fmt: skip
    assert hasher.hash_values(values[:50]).tolist() == want
    np.testing.assert_array_equal(
        hasher.signature(values, block=64), hasher.hash_values(values).min(axis=1)
    )


def test_shingles() -> None:
    a = shingle_hashes("the cat sat on the mat", k=2)
    assert len(a) == 5 and a.dtype == np.uint64 and np.all(np.diff(a.astype(float)) > 0)
    assert np.array_equal(a, shingle_hashes("The  CAT sat on the mat\n", k=2))
    assert len(shingle_hashes("abcab", k=2, unit="char")) == 3  # ab, bc, ca
    assert len(shingle_hashes("short", k=5)) == 1 and len(shingle_hashes("", k=5)) == 0
    assert jaccard(shingle_hashes("a b c d", k=1), shingle_hashes("a b c e", k=1)) == 3 / 5


def _set_pair(rng: np.random.Generator, common: int, only_a: int, only_b: int):
    values = rng.choice(2**62, size=common + only_a + only_b, replace=False).astype(np.uint64)
    a = values[: common + only_a]
    b = np.concatenate([values[:common], values[common + only_a :]])
    return a, b


def test_minhash_estimates_jaccard_within_its_standard_error() -> None:
    rng = np.random.default_rng(1)
    num_perm = 128
    hasher = MinHasher(num_perm, seed=7)
    errors, variances = [], []
    for _ in range(200):
        union = int(rng.integers(50, 400))
        common = int(rng.integers(0, union + 1))
        only_a = int(rng.integers(0, union - common + 1))
        a, b = _set_pair(rng, common, only_a, union - common - only_a)
        exact = jaccard(a, b)
        assert exact == common / union
        estimate = estimated_jaccard(hasher.signature(a), hasher.signature(b))
        errors.append(estimate - exact)
        variances.append(exact * (1 - exact) / num_perm)
    errors = np.array(errors)
    rmse, expected = float(np.sqrt(np.mean(errors**2))), float(np.sqrt(np.mean(variances)))
    print(f"MinHash, {num_perm} permutations: RMSE {rmse:.4f}, theory {expected:.4f}")
    assert np.abs(errors).max() < 4 / (2 * math.sqrt(num_perm))
    assert 0.7 * expected < rmse < 1.3 * expected
    assert abs(errors.mean()) < 3 * expected / math.sqrt(len(errors))  # unbiased


def test_s_curve_matches_the_empirical_candidate_rate() -> None:
    rng = np.random.default_rng(2)
    bands, rows = choose_bands(0.8, 128)
    assert (bands, rows) == (13, 7) and candidate_probability(0.8, bands, rows) >= 0.95
    hasher = MinHasher(bands * rows, seed=11)
    n_pairs, union = 200, 100
    for s in (0.4, 0.6, 0.7, 0.8, 0.9):
        common = round(s * union)
        sigs = []
        for _ in range(n_pairs):
            a, b = _set_pair(
                rng, common, (union - common) // 2, union - common - (union - common) // 2
            )
            sigs += [hasher.signature(a), hasher.signature(b)]
        pairs = lsh_candidates(np.array(sigs), bands, rows)
        rate = sum((2 * k, 2 * k + 1) in pairs for k in range(n_pairs)) / n_pairs
        p = float(candidate_probability(common / union, bands, rows))
        sigma = math.sqrt(p * (1 - p) / n_pairs) + 1e-9
        print(f"s={common / union:.2f}: candidates {rate:.3f}, 1-(1-s^r)^b = {p:.3f}")
        assert abs(rate - p) <= 4 * sigma + 0.01


def _planted_corpus(seed: int = 0):
    """Distinct paragraphs of the help topics, and a copy of each with a few words replaced,
    inserted or deleted (0 to 6 % of its words)."""
    from pydoc_data.topics import topics

    from llmcourse.pretrain import normalize

    paragraphs = [p for k in sorted(topics) for p in split_paragraphs(topics[k])
                  if len(p.split()) >= 50]  # fmt: skip
    kept, _ = exact_duplicates(paragraphs)
    base = [paragraphs[i] for i in kept]
    rng = random.Random(seed)
    vocabulary = sorted({w for p in base for w in normalize(p).split()})
    copies = []
    for text in base:
        words = text.split()
        for _ in range(round(rng.uniform(0, 0.06) * len(words))):
            op, i = rng.randrange(3), rng.randrange(len(words))
            if op == 0:
                words[i] = rng.choice(vocabulary)
            elif op == 1:
                words.insert(i, rng.choice(vocabulary))
            elif len(words) > 1:
                del words[i]
        copies.append(" ".join(words))
    return base + copies, len(base)


def _all_pairs_jaccard(docs: list[str], config: NearDedupConfig) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair that shares a shingle, from an inverted index (no MinHash)."""
    sets = [shingle_hashes(d, config.shingle_size, config.unit) for d in docs]
    index = defaultdict(list)
    for i, s in enumerate(sets):
        for h in s.tolist():
            index[h].append(i)
    common: Counter = Counter()
    for members in index.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                common[members[x], members[y]] += 1
    return {(i, j): c / (len(sets[i]) + len(sets[j]) - c) for (i, j), c in common.items()}


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_near_duplicate_precision_and_recall_on_planted_copies(verify: str) -> None:
    docs, n_base = _planted_corpus()
    config = NearDedupConfig(threshold=0.8, verify=verify)
    truth_j = _all_pairs_jaccard(docs, config)
    truth = {p for p, j in truth_j.items() if j >= config.threshold}
    planted = {(i, n_base + i) for i in range(n_base)}
    found = near_duplicates(docs, config)
    flagged = {(i, j) for i, j, _ in found.pairs}
    recall = len(flagged & truth) / len(truth)
    precision = len(flagged & truth) / len(flagged)
    high = {p for p in truth if truth_j[p] >= 0.85}
    recall_high = len(flagged & high) / len(high)
    print(
        f"verify={verify}: {len(docs)} documents, {len(planted)} planted copies, "
        f"{len(truth)} pairs with J >= 0.8 ({len(truth - planted)} not planted); "
        f"{found.bands} bands x {found.rows} rows, {found.candidates} LSH candidates; "
        f"recall {recall:.3f}, recall at J >= 0.85 {recall_high:.3f}, precision {precision:.3f}"
    )
    assert len(truth) >= 100
    if verify == "exact":  # only LSH can miss a pair; exact checking admits no false positive
        assert recall >= 0.9 and precision == 1.0
    else:  # a pair at the threshold is a coin flip for the estimate (standard error ~0.035)
        assert recall >= 0.85 and recall_high >= 0.95 and precision >= 0.9
    # a copy is removed and its original kept
    assert all(found.removed.get(j) == i for i, j in flagged & planted if i not in found.removed)


def test_near_duplicates_clusters_keep_the_first() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    docs = [text, "something else entirely " * 20, text + " extra", text.replace("word7 ", "")]
    found = near_duplicates(docs)
    assert found.kept == [0, 1] and found.removed == {2: 0, 3: 0}


# --------------------------------------------------------------------------------------------
# Mixtures
# --------------------------------------------------------------------------------------------


def _lengths(seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {
        "web": rng.integers(10, 200, 1000).tolist(),
        "books": rng.integers(100, 300, 40).tolist(),
        "code": rng.integers(5, 120, 300).tolist(),
    }


def test_mixture_realises_the_weights_with_repetition() -> None:
    lengths = _lengths()
    weights = {"web": 5, "books": 3, "code": 2}
    total = 200_000
    plan = plan_mixture(lengths, weights, total, seed=1)
    for name, share in plan.proportions().items():
        assert abs(share - weights[name] / 10) < 300 / total
    assert plan.epochs["books"] > 5 and plan.epochs["web"] < 1.0
    counts = Counter(i for name, i in plan.order if name == "books")
    assert set(counts) == set(range(40)) and max(counts.values()) - min(counts.values()) <= 1
    sources = [name for name, _ in plan.order]
    assert sources[:20] != sorted(sources[:20])  # interleaved, not one source after another
    assert plan == plan_mixture(lengths, weights, total, seed=1)
    assert plan.order != plan_mixture(lengths, weights, total, seed=2).order


def test_mixture_without_budget_repeats_nothing() -> None:
    lengths = _lengths()
    plan = plan_mixture(lengths, {"web": 1, "books": 1, "code": 1})
    assert max(Counter(plan.order).values()) == 1
    assert max(plan.epochs.values()) > 0.97 and all(e <= 1.0 for e in plan.epochs.values())
    with pytest.raises(ValueError, match="positive"):
        plan_mixture(lengths, {"web": 1, "books": 0})
    with pytest.raises(ValueError, match="without documents"):
        plan_mixture(lengths, {"wiki": 1})


# --------------------------------------------------------------------------------------------
# Token files
# --------------------------------------------------------------------------------------------


def test_dtype_at_the_16_bit_boundary(tmp_path: Path) -> None:
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    assert token_dtype(50_257) == np.uint16 and token_dtype(128_256) == np.uint32
    for vocab, top, dtype in ((65_536, "\ufffe", np.uint16), (65_537, "\uffff", np.uint32)):
        tok = CharTokenizer(vocab)
        docs = ["plain", f"edge {top} char"]
        tf = write_token_file(tmp_path / f"{vocab}.bin", docs, tok)
        assert tf.tokens.dtype == dtype and tf.meta["dtype"] == np.dtype(dtype).name
        assert tok.decode(tf.tokens.tolist()) == "<|endoftext|>".join(docs)
        assert (tmp_path / f"{vocab}.bin").stat().st_size == len(tf) * np.dtype(dtype).itemsize
    tok = CharTokenizer(65_536)
    with (
        pytest.raises(ValueError, match="must lie in"),
        TokenFileWriter(tmp_path / "bad.bin", describe_tokenizer(tok)) as out,
    ):
        out.add([70_000])
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.tmp").exists()


def test_token_file_round_trip_and_sidecar(tmp_path: Path, small_bpe) -> None:
    docs = ["If the condition holds, the block runs.", "while x:\n    x -= 1", "ünïcödé ✓ 中文"]
    path = tmp_path / "train.bin"
    info = describe_tokenizer(small_bpe, name="small")
    with TokenFileWriter(path, info) as out:
        for i, text in enumerate(docs):
            out.add(small_bpe.encode(text), source="ab"[i % 2])
        out.close({"note": "test"})
    tf = TokenFile.open(path, tokenizer=small_bpe)
    assert small_bpe.decode(tf.tokens.tolist()) == "<|endoftext|>".join(docs)
    assert tf.vocab_size == 301 and tf.eot_id == 300 and tf.tokens.dtype == np.uint16
    assert int(np.sum(tf.tokens == tf.eot_id)) == len(docs) - 1
    meta = json.loads(sidecar_path(path).read_text())
    lengths = [len(small_bpe.encode(d)) for d in docs]
    assert meta["num_tokens"] == sum(lengths) + len(docs) - 1 == len(tf)
    assert meta["sources"] == {"a": {"documents": 2, "tokens": lengths[0] + lengths[2]},
                               "b": {"documents": 1, "tokens": lengths[1]}}  # fmt: skip
    assert meta["tokenizer"] == {"name": "small", "fingerprint": info.fingerprint}
    assert meta["extra"] == {"note": "test"}
    assert "301" in repr(tf) and "3 documents" in repr(tf)


def test_token_file_errors(tmp_path: Path, small_bpe) -> None:
    path = tmp_path / "t.bin"
    write_token_file(path, ["some text here", "more text"], small_bpe)
    other = train_bpe("completely different training text " * 20, 280,
                      special_tokens=["<|endoftext|>"])[0]  # fmt: skip
    with pytest.raises(ValueError, match="written with the tokenizer"):
        TokenFile.open(path, tokenizer=other)
    with pytest.raises(FileNotFoundError, match="no token file"):
        TokenFile.open(tmp_path / "missing.bin")
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["dtype"] = "uint32"
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stored as uint16"):
        TokenFile.open(path)
    side.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TokenFile.open(path)
    side.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a token-file sidecar"):
        TokenFile.open(path)
    side.unlink()
    with pytest.raises(FileNotFoundError, match="no sidecar"):
        TokenFile.open(path)
    write_token_file(path, ["some text here", "more text"], small_bpe)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 2)
    with pytest.raises(ValueError, match="truncated"):
        TokenFile.open(path)
    with pytest.raises(ValueError, match="end-of-text"):
        describe_tokenizer(train_bpe("no special tokens " * 10, 260)[0])


def _resident(kind: str) -> int:
    """``RssAnon`` (memory the process allocated) or ``RssFile`` (mapped file pages), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(kind)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_memmap_reads_only_what_a_batch_touches(tmp_path: Path) -> None:
    tok = CharTokenizer(256)
    path = tmp_path / "big.bin"
    chunk = np.arange(4_000_000, dtype=np.int64) % 255
    with TokenFileWriter(path, describe_tokenizer(tok)) as out:
        for _ in range(8):
            out.add(chunk)
    del chunk
    size = path.stat().st_size
    assert size > 60_000_000
    tf = TokenFile.open(path)
    tf.batch(0, batch_size=1, seq_len=8)  # torch's first call allocates its own buffers
    anon, mapped = _resident("RssAnon"), _resident("RssFile")
    tf = TokenFile.open(path)
    assert isinstance(tf.tokens, np.memmap)
    for step in range(10):
        x, _ = tf.batch(step, batch_size=8, seq_len=256)
    anon, mapped = _resident("RssAnon") - anon, _resident("RssFile") - mapped
    print(f"file {size / 1e6:.0f} MB; 80 windows read: allocated memory +{anon / 1e6:.2f} MB, "
          f"mapped file pages +{mapped / 1e6:.2f} MB")  # fmt: skip
    assert anon < size / 20  # reading the file into memory would allocate all of it
    assert x.shape == (8, 256)
    assert int(tf.tokens[-1]) == (4_000_000 - 1) % 255  # the last token, read from disk


def test_batches_are_windows_keyed_on_the_step(tmp_path: Path) -> None:
    tok = CharTokenizer(100_000)
    n = 50_000
    with TokenFileWriter(tmp_path / "seq.bin", describe_tokenizer(tok)) as out:
        out.add(np.arange(n - 1))  # token i sits at position i
    tf = TokenFile.open(tmp_path / "seq.bin")
    assert len(tf) == n - 1
    x, y = tf.batch(step=7, batch_size=16, seq_len=64, seed=3)
    assert x.shape == y.shape == (16, 64) and x.dtype == torch.int64 and x.is_contiguous()
    starts = x[:, 0]
    assert torch.equal(x, starts[:, None] + torch.arange(64)) and torch.equal(y, x + 1)
    assert torch.equal(tf.window_starts(7, 16, 64, seed=3), starts)
    assert int(starts.min()) >= 0 and int(y.max()) <= n - 2
    x2, y2 = tf.batch(step=7, batch_size=16, seq_len=64, seed=3, device="cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, tf.batch(step=8, batch_size=16, seq_len=64, seed=3)[0])
    assert not torch.equal(x, tf.batch(step=7, batch_size=16, seq_len=64, seed=4)[0])
    torch.manual_seed(0)  # the global generator plays no part
    assert torch.equal(x, tf.batch(step=7, batch_size=16, seq_len=64, seed=3)[0])
    with pytest.raises(ValueError, match="fewer than one window"):
        tf.batch(0, 1, n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_on_cuda(tmp_path: Path) -> None:
    tf = write_token_file(tmp_path / "c.bin", ["abc" * 200], CharTokenizer(256))
    x, _ = tf.batch(0, 4, 32, device="cuda")
    assert x.is_cuda and torch.equal(x.cpu(), tf.batch(0, 4, 32)[0])


# --------------------------------------------------------------------------------------------
# The pipeline and its command
# --------------------------------------------------------------------------------------------


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--source", "--tokens", "--threshold", "--val-fraction", "--preset"):
        assert option in printed


def test_data_command_builds_mixed_token_files(tmp_path: Path, small_bpe, capsys) -> None:
    tok_path = tmp_path / "bpe.json"
    small_bpe.save(tok_path)
    notes = tmp_path / "notes.txt"
    paragraph = (
        "Contact alice@example.com about the build server at 10.1.2.3 before the "
        "release; the interpreter reads each statement and runs it in order. "
    ) * 3
    notes.write_text("\n\n".join([paragraph, paragraph, "Too short.", paragraph + "Also."]))
    out = tmp_path / "out"
    argv = ["data", "--out", str(out), "--tokenizer", str(tok_path), "--max-documents", "300",
            "--source", "instructions=3", "--source", "arithmetic=1", "--source", f"{notes}=1",
            "--tokens", "20000", "--val-fraction", "0.1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "instructions" in printed and "train:" in printed
    report = json.loads((out / "report.json").read_text())
    note = report["sources"]["notes"]
    assert note["documents"] == 4 and note["quality"]["removed"]["length"] == 1
    assert note["exact_duplicates"] == 1 and note["near_duplicates"] == 1 and note["kept"] == 1
    assert note["pii_replaced"] == {"<EMAIL>": 9, "<IP>": 9}
    assert "quality" not in report["sources"]["arithmetic"]  # generated: not filtered
    train = TokenFile.open(out / "train.bin", tokenizer=small_bpe)
    val = TokenFile.open(out / "val.bin", tokenizer=small_bpe)
    assert abs(sum(s["tokens"] for s in train.sources.values()) - 20_000) < 300
    shares = {n: m["share"] for n, m in train.meta["extra"]["mixture"].items()}
    assert abs(shares["instructions"] - 0.6) < 0.01 and abs(shares["arithmetic"] - 0.2) < 0.01
    assert abs(shares["notes"] - 0.2) < 0.02  # one document of about 300 tokens, repeated
    text = small_bpe.decode(train.tokens.tolist())
    assert "alice@example.com" not in text and "<EMAIL>" in text
    assert len(val) > 0 and set(val.sources) == {"instructions", "arithmetic"}
    x, _ = train.batch(0, 2, 16)
    assert x.shape == (2, 16) and int(x.max()) < train.vocab_size


def test_data_command_reports_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["data", "--out", str(tmp_path), "--source", "no-such-corpus=1"]) == 2
    assert "unknown corpus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "--out", str(tmp_path), "--source", "pydoc-topics=heavy"])

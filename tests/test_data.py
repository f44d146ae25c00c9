"""Tests of `llmcourse.data`: the offline corpora, splits, local files and the optional download."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path

import pytest

from llmcourse import data as D


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


def test_list_corpora_names_and_descriptions() -> None:
    names = D.list_corpora()
    assert {"pydoc-topics", "stdlib-docs", "stdlib-code", "arithmetic", "reversal",
            "instructions"} <= set(names)  # fmt: skip
    assert all(isinstance(v, str) and v for v in names.values())


def test_pydoc_topics_holds_every_help_topic() -> None:
    from pydoc_data.topics import topics

    corpus = D.load_corpus("pydoc-topics")
    assert corpus.name == "pydoc-topics"
    for key in ("if", "while", "assignment", "lambda"):
        assert topics[key].strip() in corpus.text
    assert len(corpus.text) > 0.9 * sum(len(v) for v in topics.values())


def test_stdlib_code_is_the_standard_library_without_tests() -> None:
    import json as json_module

    files = D.stdlib_files()
    rel = [f.relative_to(D.stdlib_dir()).as_posix() for f in files]
    assert "os.py" in rel and "json/__init__.py" in rel
    assert not any(part in ("test", "tests", "site-packages") for r in rel for part in r.split("/"))
    assert rel == sorted(rel)
    code = D.load_corpus("stdlib-code").text
    assert Path(inspect.getsourcefile(json_module)).read_text().rstrip() in code
    assert "# file: os.py\n" in code


def test_docstrings_match_the_modules_own_doc(monkeypatch: pytest.MonkeyPatch) -> None:
    import json as json_module
    import textwrap as textwrap_module

    chosen = [Path(inspect.getsourcefile(m)) for m in (json_module, textwrap_module)]
    monkeypatch.setattr(D, "stdlib_files", lambda: chosen)
    text = D.stdlib_docs_text()
    assert inspect.cleandoc(json_module.__doc__) in text
    assert inspect.cleandoc(textwrap_module.dedent.__doc__) in text
    assert inspect.cleandoc(textwrap_module.TextWrapper.__doc__) in text
    cached = list(D.cache_dir().glob("stdlib-docs-*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == text
    monkeypatch.setattr(D, "stdlib_files", lambda: [])  # a second call reads the cache
    assert D.load_corpus("stdlib-docs").text == text


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "x"))
    assert D.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(D.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.cache_dir() == tmp_path / "xdg" / "llmcourse"


def test_generated_corpora_are_correct_and_deterministic() -> None:
    for line in D.arithmetic_problems(500, seed=3):
        a, op, b, c = re.fullmatch(r"(\d+)([+-])(\d+)=(-?\d+)", line).groups()
        assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert D.arithmetic_problems(50, seed=1) == D.arithmetic_problems(50, seed=1)
    assert D.arithmetic_problems(50, seed=1) != D.arithmetic_problems(50, seed=2)
    for word, rev in D.reversal_pairs(200):
        assert rev == "".join(reversed(word)) and 3 <= len(word) <= 8
    checks = {
        r'Reverse the word "(\w+)"\.': lambda m: m[1][::-1],
        r'Write "(\w+)" in capital letters\.': lambda m: m[1].upper(),
        r'Sort the letters of "(\w+)" alphabetically\.': lambda m: "".join(sorted(m[1])),
        r'How many times does "(\w)" occur in "(\w+)"\?': lambda m: str(m[2].count(m[1])),
        r"What is (\d+) plus (\d+)\?": lambda m: str(int(m[1]) + int(m[2])),
        r'Repeat "(\w+)" (\d) times, separated by spaces\.': lambda m: " ".join([m[1]] * int(m[2])),
    }
    seen = set()
    for instruction, response in D.instruction_pairs(600, seed=5):
        for pattern, answer in checks.items():
            m = re.fullmatch(pattern, instruction)
            if m:
                assert response == answer(m), instruction
                seen.add(pattern)
                break
        else:
            raise AssertionError(f"unexpected instruction {instruction!r}")
    assert seen == set(checks)
    text = D.load_corpus("instructions").text
    assert text.startswith("### Instruction:\n") and "\n### Response:\n" in text


def test_train_val_split_is_deterministic_and_partitions_the_text() -> None:
    corpus = D.Corpus("lines", "".join(f"line {i} of the corpus\n" for i in range(3000)))
    train, val = corpus.train_val_split(0.1, seed=0, chunk_chars=500)
    assert (train, val) == corpus.train_val_split(0.1, seed=0, chunk_chars=500)
    assert (train, val) != corpus.train_val_split(0.1, seed=1, chunk_chars=500)
    assert len(train) + len(val) == len(corpus.text)
    assert sorted(train.splitlines() + val.splitlines()) == sorted(corpus.text.splitlines())
    assert not set(train.splitlines()) & set(val.splitlines())
    assert 0.07 < len(val) / len(corpus.text) < 0.13
    assert train.endswith("\n") and val.endswith("\n")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        D.Corpus("x", "a\n" * 10_000).train_val_split(fraction)


def test_split_of_a_tiny_text_says_why() -> None:
    with pytest.raises(ValueError, match="too short"):
        D.Corpus("tiny", "one line\n").train_val_split()


def test_summary_counts() -> None:
    s = D.Corpus("t", "héllo wörld\n中文\n").summary(sample_chars=5)
    assert s["characters"] == 15 and s["bytes"] == len("héllo wörld\n中文\n".encode())
    assert s["lines"] == 2 and s["words"] == 3 and s["sample"] == "héllo"


def test_local_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("# first\n", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\xff")
    corpus = D.load_corpus(tmp_path)
    assert corpus.text == "second file\n\n\n# first\n"
    assert D.load_corpus(tmp_path / "b.txt").text == "second file\n"


def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown corpus 'nope'.*pydoc-topics"):
        D.load_corpus("nope")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        D.load_corpus(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        D.load_corpus(tmp_path / "latin1.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"no \.txt or \.md"):
        D.load_corpus(tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        D.read_text_file(tmp_path / "missing.txt")


def _fake_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, sha=None) -> str:
    source = tmp_path / "remote.txt"
    source.write_bytes(text.encode())
    spec = D.Download(source.as_uri(), "local.txt", size=len(text.encode()), sha256=sha)
    monkeypatch.setitem(D.DOWNLOADS, "tiny", spec)
    return source.as_uri()


def test_download_checks_and_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "To be, or not to be\n"
    _fake_download(tmp_path, monkeypatch, text, sha=hashlib.sha256(text.encode()).hexdigest())
    dest = tmp_path / "store"
    assert D.download_corpus("tiny", dest).text == text
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert (dest / "local.txt.sha256").read_text().strip() == digest
    (tmp_path / "remote.txt").unlink()  # the stored copy is used from now on
    assert D.download_corpus("tiny", dest).text == text
    (dest / "local.txt").write_text("tampered\n")
    with pytest.raises(ValueError, match="changed since"):
        D.download_corpus("tiny", dest)


def test_download_rejects_a_wrong_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_download(tmp_path, monkeypatch, "abc\n", sha="0" * 64)
    with pytest.raises(ValueError, match="not the expected"):
        D.download_corpus("tiny", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_download_offline_says_so(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.txt").as_uri()
    with pytest.raises(ConnectionError, match="needs internet"):
        D.download_corpus("tinyshakespeare", tmp_path, url=missing)
    with pytest.raises(ValueError, match="unknown download"):
        D.download_corpus("tinystories-xl", tmp_path)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert D.main(["--list"]) == 0
    assert "pydoc-topics" in capsys.readouterr().out
    assert D.main(["reversal", "--json", "--split", "0.2", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "reversal" and len(summary["files"]) == 2
    train = (tmp_path / "reversal.train.txt").read_text()
    val = (tmp_path / "reversal.val.txt").read_text()
    assert len(train) + len(val) == summary["characters"]
    with pytest.raises(SystemExit) as exit_info:
        D.main(["no-such-corpus"])
    assert exit_info.value.code == 2
    assert "unknown corpus" in capsys.readouterr().err

"""``python -m llmcourse.chat``: one-shot answers, the REPL on stdin, history and its limits."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.chat import ChatSession
from llmcourse.chat.__main__ import main
from llmcourse.generate import GenerationConfig, generate
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.sft import ChatTemplate, add_special_tokens, save_chat_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, n_positions=96, n_layer=1, n_head=2, n_embd=32))
    tok = add_special_tokens(model, ByteTokenizer(eot=True))
    with torch.no_grad():  # make <|end|> likely after a few tokens, so answers stop
        model.transformer.wte.weight[tok.token_id("<|end|>")] *= 40
    folder = tmp_path_factory.mktemp("chat")
    save_chat_model(folder, model, tok, {"base": "test"})
    return folder


def expected_answer(folder: Path, messages: list[dict], max_new: int) -> str:
    from llmcourse.sft import load_chat_model

    model, tok = load_chat_model(folder)
    ids = torch.tensor(ChatTemplate().prompt_ids(tok, messages))
    end = tok.token_id("<|end|>")
    config = GenerationConfig(max_new_tokens=max_new, temperature=0.0, stop_ids=(end,))
    new = generate(model, ids, config)[0, len(ids) :].tolist()
    return tok.decode(new[: new.index(end)] if end in new else new)


def test_help_and_clear_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", str(tmp_path), "--prompt", "hi"])
    assert info.value.code == 2 and "not a fine-tuned checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--course", "no-such-model", "--prompt", "hi"])
    assert "unknown fine-tuned checkpoint" in capsys.readouterr().err


def test_one_shot_prints_the_greedy_answer(checkpoint: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmcourse.chat", "--checkpoint", str(checkpoint),
         "--prompt", "Hello", "--max-new-tokens", "12", "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    want = expected_answer(checkpoint, [{"role": "user", "content": "Hello"}], 12)
    assert result.stdout == want + "\n"


def test_repl_on_stdin_keeps_the_history(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\nMore\n/reset\nMore\n/quit\nignored\n"))
    assert main(["--checkpoint", str(checkpoint), "--max-new-tokens", "8", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = expected_answer(checkpoint, [{"role": "user", "content": "Hi"}], 8)
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "More"},
    ]
    fresh = expected_answer(checkpoint, [{"role": "user", "content": "More"}], 8)
    assert lines == [first, expected_answer(checkpoint, history, 8), fresh]


def test_history_drops_the_oldest_turns_to_fit(checkpoint: Path) -> None:
    from llmcourse.sft import load_chat_model

    model, tok = load_chat_model(checkpoint)
    session = ChatSession(model, tok, GenerationConfig(max_new_tokens=20), system="Be brief.")
    for text in ("first message", "second message", "third message"):
        "".join(session.reply(text))
    ids = session.prompt_ids("fourth message")
    text = tok.decode(ids)
    assert len(ids) <= model.max_seq_len - 20
    assert text.startswith("<|system|>Be brief.") and "first message" not in text
    assert text.endswith("<|user|>fourth message<|end|>\n<|assistant|>")
    with pytest.raises(ValueError, match="write a shorter one"):
        session.prompt_ids("x" * 200)

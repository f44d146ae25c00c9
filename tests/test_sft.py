"""Supervised fine-tuning: the chat template, the masked loss, special tokens, the data and its
held-out split, packing, the fine-tuning run and exact match."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

from llmcourse.causal_lm.data import ByteTokenizer
from llmcourse.data import arithmetic_problems, format_instruction, instruction_pairs
from llmcourse.gpt import GPT, GPTConfig
from llmcourse.llama import Llama, LlamaConfig
from llmcourse.sft import (
    IGNORE,
    TASKS,
    ChatTemplate,
    ChatTokenizer,
    Example,
    SFTConfig,
    add_special_tokens,
    build_splits,
    exact_match_by_task,
    finetune,
    load_chat_model,
    pack,
    pack_rows,
    pad_batch,
    pretraining_loss,
    pretraining_tokens,
    save_chat_model,
    sft_loss,
    task_of,
    throughput,
)
from llmcourse.sft.data import pretraining_keys
from llmcourse.sft.train import pretraining_data
from llmcourse.tokenizers import train_bpe

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": 'Reverse the word "abc".'},
    {"role": "assistant", "content": "cba"},
    {"role": "user", "content": "Now in capitals."},
    {"role": "assistant", "content": "CBA"},
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def byte_chat() -> ChatTokenizer:
    return ChatTokenizer(ByteTokenizer(eot=True))


def tiny_gpt(vocab: int = 257, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, n_positions=64, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():  # away from the init, so a skipped parameter would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_render_and_encode_agree_and_mask_the_prompt() -> None:
    tok, template = byte_chat(), ChatTemplate()
    text = template.render(CHAT)
    assert text.startswith("<|system|>Be brief.<|end|>\n<|user|>Reverse")
    assert text.endswith("<|assistant|>CBA<|end|>\n")
    ids, labels = template.encode(tok, CHAT)
    assert ids == tok.encode(text) and tok.decode(ids) == text
    learned = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tok.decode(learned) == "cba<|end|>CBA<|end|>"
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels, strict=True))
    prompt = template.prompt_ids(tok, CHAT[:2])
    assert tok.decode(prompt).endswith("<|user|>" + CHAT[1]["content"] + "<|end|>\n<|assistant|>")


def test_special_tokens_are_single_ids_and_cannot_be_forged_by_content() -> None:
    tok = byte_chat()
    assert [tok.token_id(s) for s in tok.special_tokens] == [257, 258, 259, 260]
    ids, _ = ChatTemplate().encode(tok, [{"role": "user", "content": "x<|end|>"}])
    assert ids.count(tok.token_id("<|end|>")) == 1  # the one the template wrote
    with pytest.raises(ValueError, match="unknown role"):
        ChatTemplate().render([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        ChatTemplate().render([{"role": "user"}])


def test_chat_tokens_on_the_course_bpe_and_saving(tmp_path) -> None:
    bpe, _ = train_bpe("the cat sat on the mat. " * 40, 300, special_tokens=["<|endoftext|>"])
    tok = ChatTokenizer(bpe)
    assert tok.token_id("<|system|>") == bpe.n_vocab
    text = ChatTemplate().render(CHAT)
    assert tok.decode(tok.encode(text)) == text
    ids, _ = ChatTemplate().encode(tok, CHAT)
    assert ids == tok.encode(text)
    tok.save(tmp_path)
    again = ChatTokenizer.load(tmp_path)
    assert again.encode(text) == tok.encode(text) and again.n_vocab == tok.n_vocab
    with pytest.raises(FileNotFoundError, match="not a chat checkpoint"):
        ChatTokenizer.load(tmp_path / "nowhere")


def hand_sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == IGNORE:
                continue
            row = [float(v) for v in logits[b, t]]
            top = max(row)
            total += top + math.log(sum(math.exp(v - top) for v in row)) - row[y]
            count += 1
    return total / count


def test_sft_loss_counts_the_response_only() -> None:
    tok = byte_chat()
    ids, labels = ChatTemplate().encode(tok, CHAT)
    labels_t = torch.tensor([labels])
    torch.manual_seed(0)
    logits = torch.randn(1, len(ids), tok.n_vocab)
    loss = sft_loss(logits, labels_t)
    assert loss.item() == pytest.approx(hand_sft_loss(logits, labels_t), rel=1e-5)
    predicts_prompt = [t for t in range(len(ids) - 1) if labels[t + 1] == IGNORE]
    predicts_answer = [t for t in range(len(ids) - 1) if labels[t + 1] != IGNORE]
    changed = logits.clone()
    changed[0, predicts_prompt] += 5 * torch.randn(len(predicts_prompt), tok.n_vocab)
    changed[0, -1] += 3.0  # the last position predicts nothing
    assert sft_loss(changed, labels_t).item() == pytest.approx(loss.item(), abs=1e-6)
    for t in predicts_answer:
        changed = logits.clone()
        changed[0, t, labels[t + 1]] += 1.0
        assert sft_loss(changed, labels_t).item() < loss.item()
    with pytest.raises(ValueError, match="no position has a label"):
        sft_loss(logits, torch.full_like(labels_t, IGNORE))


@pytest.mark.parametrize("arch", ["gpt", "gpt-roomy", "llama"])
def test_add_special_tokens_grows_at_the_mean_and_keeps_old_logits(arch, tmp_path) -> None:
    torch.manual_seed(0)
    if arch == "llama":
        model = Llama(LlamaConfig(vocab_size=257, dim=32, n_layer=1, n_head=2, n_kv_heads=1,
                                  hidden_dim=64, max_seq_len=64))  # fmt: skip
    else:
        model = tiny_gpt(320 if arch == "gpt-roomy" else 257)
    ids = torch.randint(0, 257, (2, 10))
    before = model(ids)[..., :257].detach()
    emb_old = model.lm_head.weight.detach()[:257].clone()
    tok = add_special_tokens(model, ByteTokenizer(eot=True))
    emb = model.transformer.wte.weight if arch != "llama" else model.model.embed_tokens.weight
    rows = 320 if arch == "gpt-roomy" else 261
    assert emb.shape[0] == rows == model.config.vocab_size and model.lm_head.weight.shape[0] == rows
    assert (model.lm_head.weight is emb) == (arch != "llama")
    assert torch.allclose(emb[257:261], emb[:257].mean(0).expand(4, -1))
    assert torch.allclose(model.lm_head.weight[257:261], emb_old.mean(0).expand(4, -1), atol=1e-6)
    assert torch.allclose(model(ids)[..., :257], before, atol=1e-5)
    new_ids = torch.tensor([tok.encode(ChatTemplate().render(CHAT[:2]))])
    assert torch.isfinite(model(new_ids)).all()
    save_chat_model(tmp_path, model, tok, {"base": "test"})
    again, tok2 = load_chat_model(tmp_path)
    assert torch.allclose(again(new_ids), model(new_ids), atol=1e-6)
    assert tok2.encode(ChatTemplate().render(CHAT)) == tok.encode(ChatTemplate().render(CHAT))


def test_held_out_prompts_never_occur_in_training_and_tasks_are_labelled() -> None:
    train, heldout = build_splits(n_train=900, n_heldout=300, seed=3)
    train_keys = {e.key for e in train}
    assert len(heldout) == 300 and len({e.key for e in heldout}) == 300
    assert not any(e.key in train_keys for e in heldout)
    pretrained = pretraining_keys()
    assert len(pretrained) > 25_000 and not any(e.key in pretrained for e in heldout)
    assert {e.task for e in heldout} == set(TASKS) == {e.task for e in train}
    for e in heldout:
        if e.task not in ("arithmetic", "dialogue"):
            assert task_of(e.messages[0][1]) == e.task
        if e.task == "dialogue":
            assert [r for r, _ in e.messages] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(ValueError, match="pretraining"):
        build_splits(10, 10, seed=0)


def test_packing_keeps_every_example_and_its_mask() -> None:
    tok = byte_chat()
    train, _ = build_splits(60, 5, seed=2)
    examples = [ChatTemplate().encode(tok, e.chat()) for e in train]
    examples = [x for x in examples if len(x[0]) <= 64]
    rows = pack_rows(examples, 64)
    assert all(len(ids) <= 64 for ids, _ in rows)
    assert [t for ids, _ in rows for t in ids] != []
    flat = sorted(tuple(x) for x, _ in examples)
    assert sum(len(ids) for ids, _ in rows) == sum(len(x) for x, _ in examples)
    ids, labels = pack(examples, 64, pad_id=0)
    assert ids.shape == (len(rows), 64)
    assert int((labels != IGNORE).sum()) == sum(sum(y != IGNORE for y in ys) for _, ys in examples)
    padded_ids, padded_labels = pad_batch(examples[:4], pad_id=0)
    assert padded_ids.shape == (4, max(len(x) for x, _ in examples[:4]))
    assert (padded_labels[0, len(examples[0][0]) :] == IGNORE).all()
    assert len(rows) < len(flat)
    with pytest.raises(ValueError, match="more than the row length"):
        pack(examples, 5, pad_id=0)


def test_the_pretraining_loss_reads_the_base_token_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    train_ids, val_ids = pretraining_tokens("gpt-tiny-tasks")  # builds the data, trains nothing
    assert not (tmp_path / "course_models" / "gpt-tiny-tasks").exists()
    corpus = {format_instruction(i, r) for i, r in instruction_pairs()} | set(arithmetic_problems())
    docs = {}
    for name, ids in (("train", train_ids), ("val", val_ids)):
        assert ids.dtype == torch.int64
        text = bytes(i for i in ids.tolist() if i != 256).decode()  # 256: <|endoftext|>
        pieces = torch.tensor_split(ids, (ids == 256).nonzero().flatten() + 1)
        docs[name] = [bytes(p[p != 256].tolist()).decode() for p in pieces if len(p) > 1]
        assert "".join(docs[name]) == text and set(docs[name]) <= corpus
    assert len(docs["val"]) == pytest.approx(0.05 * (len(docs["train"]) + len(docs["val"])), 0.02)
    unseen = set(docs["val"]) - set(docs["train"])  # held out (short sums and counts recur
    assert len(unseen) > 0.8 * len(set(docs["val"]))  # in the corpora themselves)
    fake = tmp_path / "base"
    fake.mkdir()
    (fake / "config.json").write_text('{"train": {"data": null}}')
    with pytest.raises(ValueError, match="names no token files"):
        pretraining_data(str(fake))
    data = pretraining_data("gpt-tiny-tasks")
    (fake / "config.json").write_text(json.dumps({"train": {"data": str(data)}}))
    assert pretraining_data(str(fake)) == data


def test_pretraining_loss_is_the_mean_next_token_loss_of_the_windows() -> None:
    model = tiny_gpt(50).train()
    ids = torch.randint(0, 50, (4 * 17,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.eval()
        blocks = ids.view(4, 17)  # four windows of 16 + 1 cover the stream exactly
        logits = model(blocks[:, :-1])
        want = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), blocks[:, 1:].reshape(-1))
        model.train()
    assert pretraining_loss(model, ids, seq_len=16, windows=4) == pytest.approx(want.item(), 1e-5)
    assert model.training  # left as it was found


def test_throughput_compares_padding_and_packing() -> None:
    tok = byte_chat()
    train, _ = build_splits(200, 5, seed=2)
    examples = [ChatTemplate().encode(tok, e.chat()) for e in train]
    model = tiny_gpt(261)
    result = throughput(model, examples, pad_id=260, length=64, batch_size=4, steps=1)
    assert result["packing"]["fill"] > result["padding"]["fill"]
    assert all(r["tokens_per_s"] > 0 for r in result.values())


def test_finetune_learns_and_adds_the_weighted_lm_loss() -> None:
    tok = byte_chat()
    model = tiny_gpt(261)
    data = [Example((("user", f"Say {w}."), ("assistant", w)), "repeat") for w in ("ab", "cd")]
    pretrain = torch.tensor(list(b"1+2=3\n4+5=9\n" * 20))
    cfg = SFTConfig(steps=30, batch_size=4, seq_len=32, lr=3e-3, warmup=1, log_every=1,
                    aux_lm_weight=0.5, device="cpu")  # fmt: skip
    history = finetune(model, tok, cfg, data, pretrain)
    assert history["sft_loss"][-1] < 0.5 * history["sft_loss"][0]
    for total, ft, pt in zip(
        history["train_loss"], history["sft_loss"], history["lm_loss"], strict=True
    ):
        assert total == pytest.approx(ft + 0.5 * pt, rel=1e-5)
    with pytest.raises(TypeError, match="add_special_tokens"):
        finetune(model, ByteTokenizer(), cfg, data, pretrain)


class ScriptedCache:
    def __init__(self) -> None:
        self.length, self.tokens = 0, None

    def reset(self) -> None:
        self.length, self.tokens = 0, None


class ScriptedModel(torch.nn.Module):
    """Answers each prompt with the ids of a table, then ``<|end|>`` (a test oracle)."""

    max_seq_len = 64

    def __init__(self, table: dict[tuple[int, ...], list[int]], tok: ChatTokenizer) -> None:
        super().__init__()
        self.table, self.tok = table, tok
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ScriptedCache:
        return ScriptedCache()

    def forward(self, ids: torch.Tensor, cache: ScriptedCache | None = None) -> torch.Tensor:
        if cache is not None:
            cache.tokens = ids if cache.tokens is None else torch.cat([cache.tokens, ids], 1)
            cache.length += ids.shape[1]
            ids = cache.tokens
        assistant, end = self.tok.token_id("<|assistant|>"), self.tok.token_id("<|end|>")
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.tok.n_vocab)
        for b, row in enumerate(ids.tolist()):
            cut = len(row) - row[::-1].index(assistant)
            answer = self.table[tuple(row[:cut])] + [end]
            done = len(row) - cut
            logits[b, -1, answer[min(done, len(answer) - 1)]] = 10.0
        return logits


def test_exact_match_by_task_against_a_scripted_model() -> None:
    tok, template = byte_chat(), ChatTemplate()
    _, heldout = build_splits(50, 40, seed=5)
    heldout = [e for e in heldout if len(template.prompt_ids(tok, e.prompt)) < 48][:12]
    assert len(heldout) == 12
    table, expected = {}, {}
    for i, e in enumerate(heldout):
        right = i % 3 != 0
        table[tuple(template.prompt_ids(tok, e.prompt))] = tok.encode(e.answer if right else "?")
        expected.setdefault(e.task, []).append(right)
    scores = exact_match_by_task(ScriptedModel(table, tok), tok, heldout, max_new_tokens=16)
    for task, hits in expected.items():
        assert scores[task] == pytest.approx(sum(hits) / len(hits))
    assert scores["all"] == pytest.approx(8 / 12)


def test_command_line_help_and_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from llmcourse.sft.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--aux-lm-weight" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--steps", "0"])
    assert info.value.code == 2 and "steps" in capsys.readouterr().err


def test_load_sft_trains_once_and_again_for_another_recipe_or_damage(tmp_path, monkeypatch):
    from llmcourse import course_models
    from llmcourse.causal_lm import TrainConfig
    from llmcourse.pretrain import pretrain
    from llmcourse.sft import train as sft_train

    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    base = tmp_path / "base"
    data = course_models.token_files("gpt-tiny-tasks")
    pretrain(TrainConfig(
        tokenizer="bytes-eot", data=str(data), n_layer=1, n_head=2, n_embd=32, seq_len=48,
        batch_size=2, steps=2, eval_every=2, eval_batches=1, checkpoint_every=0, out=str(base),
        device="cpu", bf16=False,
    ))  # fmt: skip
    recipe = SFTConfig(base=str(base), n_train=40, n_heldout=2, seq_len=48, steps=2,
                       batch_size=2, warmup=1, device="cpu", aux_lm_weight=0.5)  # fmt: skip
    monkeypatch.setitem(sft_train.RECIPES, "test-sft", recipe)
    runs = []
    finetune_once = sft_train.finetune
    monkeypatch.setattr(
        sft_train, "finetune", lambda *a, **k: runs.append(1) or finetune_once(*a, **k)
    )

    first, tok = sft_train.load_sft("test-sft")
    again, _ = sft_train.load_sft("test-sft")
    assert len(runs) == 1 and "<|assistant|>" in tok.special_tokens
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    monkeypatch.setitem(sft_train.RECIPES, "test-sft", recipe.replace(steps=3))
    sft_train.load_sft("test-sft")
    assert len(runs) == 2
    (tmp_path / "course_models" / "test-sft" / "model.safetensors").write_bytes(b"garbage")
    sft_train.load_sft("test-sft")
    assert len(runs) == 3
    with pytest.raises(ValueError, match="unknown fine-tuned checkpoint"):
        sft_train.load_sft("no-such-model")

"""data=chat: chat-templated prompts, a generation after them, the completion in samples.jsonl."""

from __future__ import annotations

import json

import pytest

import experiments.run as runner
from experiments.chat import Chat
from tests.test_ar import WORDS, word_tokenizer
from tests.test_experiments import compose_run

TEMPLATE = ("{% for m in messages %}<eos>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %} on{% endif %}")
MASK = len(WORDS)


def chat_tokenizer():
    tok = word_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def test_rows_hold_the_templated_prompt_then_the_generation():
    task = Chat(chat_tokenizer(), prompt_text=["the cat", "a dog ran"], gen_length=4)
    rows = task.prompts(None, 3, 10, MASK)
    # "<eos>the cat on" = [0, 1, 2, 4]; "<eos>a dog ran on" = [0, 5, 7, 8, 4]
    assert rows[0].tolist() == [0, 0, 0, 1, 2, 4, MASK, MASK, MASK, MASK]
    assert rows[1].tolist() == [0, 0, 5, 7, 8, 4, MASK, MASK, MASK, MASK]  # pad (EOS) first
    assert rows[2].tolist() == rows[0].tolist()  # prompts repeat across the samples
    assert (rows[:, -4:] == MASK).all()


def test_the_completion_stops_at_the_first_end_token():
    task = Chat(chat_tokenizer(), prompt_text="the cat", gen_length=4)
    prompt = task.prompts(None, 1, 8, MASK)[0]
    ids = prompt.tolist()[:4] + [3, 6, 0, 9]  # "sat mat" then EOS then "far"
    out = task.completion(ids, prompt, MASK)
    assert out == {"prompt": "the cat on", "text": "sat mat"}


def test_bad_prompts_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="no chat template"):
        Chat(word_tokenizer(), prompt_text="the cat")
    with pytest.raises(ValueError, match="exactly one of"):
        Chat(chat_tokenizer())
    with pytest.raises(ValueError, match="needs length >= 9"):
        Chat(chat_tokenizer(), prompt_text="a dog ran", gen_length=4).prompts(None, 1, 8, MASK)
    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="'prompt' or 'messages'"):
        Chat(chat_tokenizer(), prompts_file=str(file))


def test_a_prompts_file_of_messages(tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps({"messages": [{"role": "user", "content": "the dog"}]}) + "\n")
    task = Chat(chat_tokenizer(), prompts_file=str(file), gen_length=2)
    assert task.prompts(None, 1, 6, MASK)[0].tolist() == [0, 1, 7, 4, MASK, MASK]


def test_a_chat_run_writes_completions(tmp_path):
    cfg = compose_run(["data=chat", "data.chat_template=false", "data.prompt_text=ROMEO.",
                       "data.gen_length=10", "length=16", "num_samples=2", "batch_size=2",
                       "steps=[4]", "threads=1", "reference_samples=0"])
    runner.run(cfg, tmp_path, {"data": "chat"})
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["prompt"].strip() == "ROMEO." for r in rows)
    for r in rows:
        assert isinstance(r["text"], str) and len(r["tokens"]) == 16
        assert r["tokens"][-10:] != r["tokens"][:10]  # generated, not the prompt repeated

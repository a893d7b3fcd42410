"""Prompts as instruct models are used: chat-templated text, then a generation after it.

``data=chat`` turns ``prompt_text`` (one string or a list) or a ``prompts_file`` (one prompt per
line, or JSON lines with ``prompt`` or ``messages``) into rows of ``length`` tokens:
``[pad ... pad][templated prompt][mask × gen_length]``. With ``chat_template: true`` each prompt
is the user turn of ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``, as
Dream's and LLaDA's authors prompt their instruct models; without, the raw text. Prompts of
different lengths are left-padded with the tokenizer's pad token (else EOS): the padding is
clamped and seen by the model (there is no attention mask), so for numbers comparable with the
authors' runs give one prompt per run or prompts of equal length.

The completion is what follows the prompt up to the first end token (EOS, PAD, and the chat
end tokens ``<|im_end|>``/``<|eot_id|>`` where the tokenizer has them: Dream and LLaDA fill
the tail with these); ``samples.jsonl`` records it as ``text`` beside the ids and the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>")

__all__ = ["Chat"]


def _read_prompts(path: Path) -> list[Any]:
    if not path.is_file():
        raise ValueError(f"prompts_file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            row = json.loads(line)
            if "messages" not in row and "prompt" not in row:
                raise ValueError(f"{path}:{n}: a JSON line needs 'prompt' or 'messages'")
            out.append(row.get("messages", row.get("prompt")))
        else:
            out.append(line)
    if not out:
        raise ValueError(f"prompts_file {path} holds no prompt")
    return out


class Chat:
    """Chat prompts, each followed by ``gen_length`` generated positions.

    Args:
        tokenizer: the denoiser's (injected; engine ids).
        prompt_text: a prompt or a list of prompts (or chat message lists).
        prompts_file: a .txt (one per line) or .jsonl file of prompts; exclusive with the text.
        chat_template: apply the tokenizer's chat template (needs one).
        system: an optional system message (chat template only).
        gen_length: generated positions after each prompt (default: all that remain).
    """

    needs_corpus = False

    def __init__(self, tokenizer: Any = None, prompt_text: Any = None,
                 prompts_file: str | None = None, chat_template: bool = True,
                 system: str | None = None, gen_length: int | None = None):
        if tokenizer is None:
            raise ValueError("data=chat needs the denoiser's tokenizer")
        if (prompt_text is None) == (prompts_file is None):
            raise ValueError("data=chat needs exactly one of prompt_text= and prompts_file=")
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=true, but the denoiser's tokenizer has no chat "
                             "template: set data.chat_template=false for raw text")
        if gen_length is not None and int(gen_length) < 1:
            raise ValueError(f"gen_length must be >= 1, got {gen_length}")
        if prompts_file is not None:
            self.prompts_in = _read_prompts(Path(prompts_file).expanduser())
        else:
            self.prompts_in = [prompt_text] if isinstance(prompt_text, str) else list(prompt_text)
        self.tokenizer, self.chat_template, self.system = tokenizer, bool(chat_template), system
        self.gen_length = None if gen_length is None else int(gen_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad prompts")
        self.pad_id = int(pad)
        self.encoded = [self._encode(p) for p in self.prompts_in]
        ends = [tokenizer.eos_token_id, tokenizer.pad_token_id]
        ends += [tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS
                 if t in tokenizer.get_vocab()]
        self.end_ids = {int(e) for e in ends if e is not None}

    def _encode(self, prompt: Any) -> list[int]:
        tok = self.tokenizer
        if not self.chat_template:
            if not isinstance(prompt, str):
                raise ValueError("message lists need chat_template=true")
            return list(tok(prompt, add_special_tokens=False)["input_ids"])
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if self.system:
            messages = [{"role": "system", "content": self.system}, *messages]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return an encoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def prompts(self, sequences: Tensor | None, num_samples: int, length: int,
                mask_id: int) -> Tensor:
        """(N, L) long rows: row i holds prompt i mod P, right-aligned before its generation."""
        longest = max(len(e) for e in self.encoded)
        gen = self.gen_length if self.gen_length is not None else length - longest
        if gen < 1 or longest + gen > length:
            raise ValueError(f"the longest prompt has {longest} tokens; with gen_length {gen} "
                             f"it needs length >= {longest + max(gen, 1)}, got {length}")
        rows = torch.full((num_samples, length), self.pad_id, dtype=torch.long)
        rows[:, length - gen:] = mask_id
        for i in range(num_samples):
            ids = self.encoded[i % len(self.encoded)]
            rows[i, length - gen - len(ids): length - gen] = torch.tensor(ids)
        return rows

    def completion(self, ids: list[int], prompt: Tensor, mask_id: int) -> dict:
        """The generated text of one row (up to its first end token) and its prompt's text."""
        gen_start = int((prompt != mask_id).long().cumsum(0).argmax()) + 1
        tail = ids[gen_start:]
        cut = next((j for j, t in enumerate(tail) if t in self.end_ids), len(tail))
        start = next((j for j, t in enumerate(ids[:gen_start]) if t != self.pad_id), 0)
        return {"prompt": self.tokenizer.decode(ids[start:gen_start]),
                "text": self.tokenizer.decode(tail[:cut], skip_special_tokens=True)}

"""The batch engine and its slot KV cache, sampling and the text assembler, without HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DynamicCache

from inference._detok import TextAssembler
from inference._engine import BatchEngine, _cache_kwarg
from inference._sampling import Sampler, SamplingParams
from inference.artifact import load_model_dir


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Any:
    return load_model_dir(tiny_model_dir, dtype="float32")


def _oracle(model: Any, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens of one sequence alone: batch 1, no padding, transformers' own DynamicCache."""
    cache = DynamicCache()
    ids = torch.tensor([prompt])
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            kwargs = {_cache_kwarg(model): cache}
            logits = model(input_ids=ids, use_cache=True, **kwargs).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            ids = torch.tensor([[token]])
    return out


# (step at which the group joins, prompt lengths); sequences run up to 150 steps so the buffer grows past its
# first 64 columns and compacts when early rows leave.
_SCHEDULE = [(0, [5, 9]), (3, [30]), (10, [4, 4, 12]), (70, [40])]
_LIFETIMES = {0: 40, 1: 150, 2: 60, 3: 20, 4: 100, 5: 70, 6: 75}


def test_batched_greedy_equals_single_sequence_alone(tiny: Any) -> None:
    """Sequences joining and leaving a running batch produce exactly the tokens each would alone."""
    torch.manual_seed(0)
    vocab = tiny.model.config.vocab_size
    prompts: list[list[int]] = []
    joins: dict[int, list[int]] = {}
    for step, lengths in _SCHEDULE:
        for length in lengths:
            joins.setdefault(step, []).append(len(prompts))
            prompts.append(torch.randint(3, vocab, (length,)).tolist())
    engine = BatchEngine(tiny.model, max_rows=4, pad_token_id=0)
    rows: list[int] = []  # request index per engine row
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    pending = sorted(joins.items())
    for step in range(400):
        if step > 0 and not pending and not rows:
            break
        while pending and pending[0][0] <= step and len(rows) + len(pending[0][1]) <= 4:
            _, group = pending.pop(0)
            logits, _ = engine.prefill([prompts[i] for i in group])
            for j, i in enumerate(group):
                out[i].append(int(logits[j].argmax()))
            rows.extend(group)
        if not rows:
            continue
        logits, _ = engine.decode([out[i][-1] for i in rows])
        for r, i in enumerate(rows):
            out[i].append(int(logits[r].argmax()))
        done = [r for r, i in enumerate(rows) if len(out[i]) >= _LIFETIMES[i]]
        engine.remove(done)
        for r in sorted(done, reverse=True):
            rows[r] = rows[-1]
            rows.pop()
    assert not pending
    assert not rows
    assert engine.store.columns > 64
    for i, prompt in enumerate(prompts):
        assert out[i] == _oracle(tiny.model, prompt, _LIFETIMES[i]), f"sequence {i}"


def test_removed_rows_free_the_store(tiny: Any) -> None:
    """Removing every row leaves an empty store that accepts a new group at column zero."""
    engine = BatchEngine(tiny.model, max_rows=2, pad_token_id=0)
    engine.prefill([[5, 6, 7], [8, 9]])
    engine.decode([1, 2])
    engine.remove([0, 1])
    assert engine.rows == 0
    assert engine.store.end == 0
    logits, _ = engine.prefill([[5, 6, 7]])
    assert engine.rows == 1
    assert engine.store.end == 3
    assert logits.shape[0] == 1


class _CharTokenizer:
    """Decodes ids as characters (id 0 = an incomplete UTF-8 piece): the real decode interface."""

    def decode(self, ids: list[int], **_: Any) -> str:
        return "".join("\ufffd" if i == 0 else chr(i) for i in ids)


@pytest.mark.parametrize(
    ("text", "stop", "deltas", "stopped"),
    [
        ("hello", (), ["h", "e", "l", "l", "o"], False),
        ("ab END", ("END",), ["a", "b", " ", "", "", ""], True),
        ("abEN!", ("END",), ["a", "b", "", "", "EN!"], False),
        ("xEyEND", ("END",), ["x", "", "Ey", "", "", ""], True),
    ],
    ids=["no-stop", "stop-cut", "prefix-released", "stop-after-false-start"],
)
def test_text_assembler_holds_back_stop_prefixes(
    text: str, stop: tuple[str, ...], deltas: list[str], stopped: bool
) -> None:
    """Text that could begin a stop string is held back; a stop string ends the text before it."""
    assembler = TextAssembler(_CharTokenizer(), stop)
    got = [assembler.push(ord(c)) for c in text]
    assert got == deltas
    assert assembler.stopped is stopped
    if not stopped:
        assert assembler.flush() == ""  # nothing left held back once the text ran out
    joined = "".join(got)
    assert all(s not in joined for s in stop)


def test_text_assembler_waits_for_complete_characters() -> None:
    """A trailing replacement character (half a UTF-8 sequence) is not sent until completed."""
    assembler = TextAssembler(_CharTokenizer(), ())
    assert assembler.push(ord("a")) == "a"
    assert assembler.push(0) == ""
    assert assembler.flush() == "\ufffd"


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=1, temperature=0.0),
        SamplingParams(max_tokens=1, temperature=1.0, seed=7),
        SamplingParams(max_tokens=1, temperature=0.8, top_p=0.5, seed=7),
    ],
    ids=["greedy", "seeded", "seeded-top-p"],
)
def test_sampler_is_reproducible(params: SamplingParams) -> None:
    """Greedy picks the argmax; two samplers with the same seed draw the same sequence."""
    logits = torch.linspace(-2.0, 2.0, 50)
    first, second = Sampler(params), Sampler(params)
    a = [first.sample(logits, 49) for _ in range(20)]
    b = [second.sample(logits, 49) for _ in range(20)]
    assert a == b
    if params.greedy:
        assert set(a) == {49}
    else:
        assert len(set(a)) > 1


def test_top_p_keeps_only_the_nucleus() -> None:
    """With top_p small, only the most likely token can be drawn."""
    logits = torch.tensor([5.0, 1.0, 0.5, 0.1])
    sampler = Sampler(SamplingParams(max_tokens=1, temperature=1.0, top_p=0.1, seed=1))
    assert {sampler.sample(logits, 0) for _ in range(50)} == {0}


def _run_groups(engine: BatchEngine, groups: list[list[list[int]]], steps: int) -> list[list[int]]:
    """Prefill each group in turn (after the previous one decoded ``steps`` tokens), greedy."""
    outputs: list[list[int]] = []
    for group in groups:
        logits, _ = engine.prefill(group)
        rows = [[int(logits[j].argmax())] for j in range(len(group))]
        for _ in range(steps - 1):
            logits, _ = engine.decode([r[-1] for r in rows])
            for j, r in enumerate(rows):
                r.append(int(logits[j].argmax()))
        engine.remove(list(range(engine.rows)))
        outputs.extend(rows)
    return outputs


@pytest.mark.parametrize(
    ("prefix_len", "suffix_lens", "expect_hits"),
    [
        (48, [[7], [3, 9, 5]], True),  # cached by the first request, reused by the group
        (40, [[4, 11, 2]], False),  # one group: its shared prefix prefilled once, then cached
        (40, [[4], [6, 6]], True),  # same-length suffixes: no padding between prefix and suffix
        (8, [[5], [5, 6]], False),  # shorter than one block: nothing to reuse
    ],
    ids=["cached-then-reused", "shared-within-group", "no-padding", "below-one-block"],
)
def test_prefix_cache_gives_the_tokens_of_a_full_prefill(
    tiny: Any, prefix_len: int, suffix_lens: list[list[int]], expect_hits: bool
) -> None:
    """Requests sharing a prefix reuse its keys/values and still produce exactly the greedy
    tokens each produces alone (transformers' own cache, no reuse)."""
    torch.manual_seed(1)
    vocab = tiny.model.config.vocab_size
    prefix = torch.randint(3, vocab, (prefix_len,)).tolist()
    groups = [
        [prefix + torch.randint(3, vocab, (n,)).tolist() for n in lengths]
        for lengths in suffix_lens
    ]
    engine = BatchEngine(tiny.model, max_rows=4, pad_token_id=0, prefix_cache_tokens=1024)
    assert engine.fast is not None
    got = _run_groups(engine, groups, 12)
    want = [_oracle(tiny.model, prompt, 12) for group in groups for prompt in group]
    assert got == want
    assert (engine.prefix_cache.hits > 0) is expect_hits
    if prefix_len >= 16:
        assert engine.prefix_cache.tokens > 0


def test_prefix_cache_evicts_within_its_budget(tiny: Any) -> None:
    """Entries beyond prefix_cache_tokens are evicted least recently used; a hit needs equal
    tokens, not just an equal hash."""
    from inference._prefix import PrefixCache

    cache = PrefixCache(64)
    kv = [(torch.zeros(1, 1, 48, 2), torch.zeros(1, 1, 48, 2))]
    cache.insert(list(range(48)), kv)
    cache.insert(list(range(100, 148)), kv)  # 96 tokens > 64: the first entry goes
    assert cache.tokens == 48
    assert cache.lookup([*range(48), 1], 48)[0] == 0
    assert cache.lookup([*range(100, 148), 1], 48)[0] == 48
    assert cache.lookup(list(range(100, 132)) + [7] * 16, 48)[0] == 32


def test_fast_path_matches_transformers_forward(tiny: Any) -> None:
    """float32: the lean forward and transformers' forward give the same greedy tokens."""
    torch.manual_seed(2)
    vocab = tiny.model.config.vocab_size
    groups = [[torch.randint(3, vocab, (n,)).tolist() for n in (6, 13, 9)]]
    fast = _run_groups(BatchEngine(tiny.model, max_rows=4, pad_token_id=0), groups, 30)
    slow = _run_groups(BatchEngine(tiny.model, max_rows=4, pad_token_id=0, fast=False), groups, 30)
    assert fast == slow

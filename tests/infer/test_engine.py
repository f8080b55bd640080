"""The huggingface engine: batched decoding equals transformers' own generate, text deltas are clean."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.infer.detokenize import IncrementalText
from lmforge.infer.engine import EngineOverloaded, EngineRejected, SamplingOptions
from lmforge.infer.hf_engine import HuggingFaceEngine


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    path = tiny_model("llama")
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


async def collect(engine, ids, options):
    texts = [""] * options.n
    finish = [None] * options.n
    counts = [0] * options.n
    async for chunk in engine.generate(ids, options):
        texts[chunk.index] += chunk.text
        counts[chunk.index] = chunk.num_tokens
        finish[chunk.index] = chunk.finish_reason or finish[chunk.index]
    return texts, finish, counts


def test_batched_greedy_equals_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [
        tokenizer(t)["input_ids"] for t in ("Hi", "A somewhat longer prompt about cats and dogs", "x y")
    ]
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=4)

    async def run():
        await engine.start()
        results = await asyncio.gather(
            *[
                collect(engine, p, SamplingOptions(max_new_tokens=10 + i, temperature=0))
                for i, p in enumerate(prompts)
            ]
        )
        await engine.close()
        return results

    results = asyncio.run(run())
    assert engine.stats()["batches"] == 1  # all three decoded together
    for i, (prompt, (texts, finish, counts)) in enumerate(zip(prompts, results, strict=True)):
        reference = model.generate(torch.tensor([prompt]), max_new_tokens=10 + i, do_sample=False)
        expected = tokenizer.decode(reference[0, len(prompt) :], skip_special_tokens=True)
        assert texts[0] == expected
        assert finish == ["length"] and counts == [10 + i]


def test_seeded_sampling_is_reproducible_and_queue_is_bounded(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer("Once upon a time")["input_ids"]
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=1, max_queued=0)
    options = SamplingOptions(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50, seed=11, n=1)

    async def run():
        await engine.start()
        a = await collect(engine, ids, options)
        b = await collect(engine, ids, options)
        first = engine.generate(ids, SamplingOptions(max_new_tokens=50, temperature=0))
        with pytest.raises(EngineOverloaded):
            engine.generate(ids, options)
        await first.aclose()
        await engine.close()
        return a, b

    a, b = asyncio.run(run())
    assert a == b


def test_an_empty_prompt_is_refused_not_crashed_on(model_and_tokenizer):
    engine = HuggingFaceEngine(*model_and_tokenizer, context_length=2048, max_batch=2)
    assert engine.vocab_size == model_and_tokenizer[0].get_input_embeddings().num_embeddings

    async def run():
        await engine.start()
        try:
            with pytest.raises(EngineRejected, match="no tokens"):
                engine.generate([], SamplingOptions(max_new_tokens=2))
            return await collect(engine, [5, 6], SamplingOptions(max_new_tokens=2, temperature=0))
        finally:
            await engine.close()

    texts, finish, counts = asyncio.run(run())
    assert counts == [2] and finish == ["length"]  # the engine still serves


def test_stop_token_ids_end_a_choice(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer("Hello")["input_ids"]
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048)

    async def run(options):
        await engine.start()
        return await collect(engine, ids, options)

    texts, _, counts = asyncio.run(run(SamplingOptions(max_new_tokens=6, temperature=0)))
    reference = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :].tolist()
    stop_at = reference[2]
    texts, finish, counts = asyncio.run(
        run(SamplingOptions(max_new_tokens=6, temperature=0, stop_token_ids=[stop_at]))
    )
    asyncio.run(engine.close())
    assert finish == ["stop"] and counts[0] == reference.index(stop_at) + 1
    assert texts[0] == tokenizer.decode(reference[: reference.index(stop_at)], skip_special_tokens=True)


def test_incremental_text_keeps_multibyte_characters_whole(asset):
    tokenizer = AutoTokenizer.from_pretrained(asset("qwen2_5"))
    text = "Grüße 你好 🌍 done"
    decoder = IncrementalText(tokenizer, [])
    pieces = [decoder.push(i)[0] for i in tokenizer(text)["input_ids"]]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_incremental_text_never_leaks_a_stop_string(asset):
    tokenizer = AutoTokenizer.from_pretrained(asset("qwen2_5"))
    decoder = IncrementalText(tokenizer, ["STOP here"])
    sent = ""
    stopped = False
    for token in tokenizer("Some words then STOP here and more")["input_ids"]:
        delta, stopped = decoder.push(token)
        sent += delta
        if stopped:
            break
    assert stopped and sent == "Some words then "


def test_vllm_backend_without_vllm_says_how_to_get_it(tiny_model):
    import importlib.util

    from lmforge.config import build_config
    from lmforge.errors import ConfigError
    from lmforge.infer.backends import create_engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment")
    config = build_config({"model_name_or_path": str(tiny_model("llama")), "infer_backend": "vllm"})
    with pytest.raises(ConfigError, match="make vllm-env"):
        create_engine(config)


def test_requests_join_a_running_batch_and_decode_as_if_alone(model_and_tokenizer):
    """A request arriving mid-decode starts at the next step (continuous batching), and every
    row still decodes exactly as ``generate`` decodes it alone: shorter and longer prompts
    than the running batch's width, and rows leaving before and after the others."""
    model, tokenizer = model_and_tokenizer
    first = tokenizer("Hi there")["input_ids"]
    short = tokenizer("x")["input_ids"]
    long = tokenizer(" ".join(["a long prompt about the sea and the sky"] * 6))["input_ids"]
    plan = [(first, 30), (short, 5), (long, 12)]
    engine = HuggingFaceEngine(model, tokenizer, context_length=2048, max_batch=4)
    finished_order: list[int] = []

    async def one(i, ids, max_new, started):
        options = SamplingOptions(max_new_tokens=max_new, temperature=0)
        text, count = "", 0
        async for chunk in engine.generate(ids, options):
            text += chunk.text
            count = chunk.num_tokens
            if count == 3 and started is not None:
                started.set()
        finished_order.append(i)
        return text, count

    async def run():
        await engine.start()
        started = asyncio.Event()
        head = asyncio.create_task(one(0, first, 30, started))
        await started.wait()  # the first request is decoding: the others must join it
        rest = [one(i, ids, n, None) for i, (ids, n) in enumerate(plan) if i]
        results = await asyncio.gather(head, *rest)
        await engine.close()
        return results

    results = asyncio.run(run())
    stats = engine.stats()
    assert stats["batches"] == 1 and stats["requests_joined"] == 2
    assert finished_order[-1] == 0  # the joiners ended while the first one still decoded
    for (ids, max_new), (text, count) in zip(plan, results, strict=True):
        reference = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
        assert text == tokenizer.decode(reference[0, len(ids) :], skip_special_tokens=True)
        assert count == max_new


def test_prefill_thread_count_is_restored_after_the_block():
    from lmforge.infer.hf_engine import _cpu_threads

    before = torch.get_num_threads()
    with _cpu_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), _cpu_threads(before + 1):
        raise RuntimeError("a failed prefill")
    assert torch.get_num_threads() == before
    with _cpu_threads(None):
        assert torch.get_num_threads() == before

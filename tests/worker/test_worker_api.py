"""The worker's OpenAI-compatible API over real HTTP on 127.0.0.1 (tiny random llama)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker.worker_support import (
    RunningWorker,
    chat_body,
    read_sse,
    run_worker,
    stream_text,
    worker_config,
)


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path) -> Iterator[RunningWorker]:
    with run_worker(worker_config(tiny_model_dir)) as running:
        yield running


@pytest.fixture
def client(worker: RunningWorker) -> Iterator[httpx.Client]:
    with worker.client() as c:
        yield c


def test_chat_completion_has_the_openai_shape(client: httpx.Client) -> None:
    """A chat completion returns one assistant choice, a finish reason and token usage."""
    response = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=5))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] in {"length", "stop"}
    usage = body["usage"]
    assert usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(
    "content",
    ["What is the capital of France?", "Patients, claims and invoices.", "Numbers 1 2 3"],
    ids=["question", "nouns", "numbers"],
)
def test_streaming_equals_non_streaming_for_greedy(client: httpx.Client, content: str) -> None:
    """The SSE deltas of a greedy stream join to the non-streamed text, ending in [DONE]."""
    full = client.post("/v1/chat/completions", json=chat_body(content, max_tokens=24)).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat_body(content, max_tokens=24, stream=True, stream_options={"include_usage": True}),
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events, done = read_sse(response)
    assert done
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream_text(events) == full["choices"][0]["message"]["content"]
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finish[-1] == full["choices"][0]["finish_reason"]
    assert events[-1]["usage"] == full["usage"]


def test_text_completion_stream_and_json_agree(client: httpx.Client) -> None:
    """/v1/completions serves the same greedy text as JSON and as a stream."""
    body = {"model": "tiny", "prompt": "The gateway routes", "temperature": 0, "max_tokens": 12}
    full = client.post("/v1/completions", json=body).json()
    assert full["object"] == "text_completion"
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        events, done = read_sse(response)
    assert done
    assert stream_text(events) == full["choices"][0]["text"]


def test_stop_string_cuts_the_text(client: httpx.Client) -> None:
    """A stop string ends generation before it, with finish_reason 'stop', streamed or not."""
    base = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=30)).json()
    text = base["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    expected = text[: text.index(stop)]
    body = chat_body("Hello", max_tokens=30, stop=[stop])
    cut = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert cut["message"]["content"] == expected
    assert cut["finish_reason"] == "stop"
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        events, _ = read_sse(r)
    assert stream_text(events) == expected


def test_seeded_sampling_is_reproducible(client: httpx.Client) -> None:
    """The same seed gives the same sampled text; the request is not greedy."""
    body = chat_body("Hello", max_tokens=16, temperature=1.0, seed=1234)
    first = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    second = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    greedy = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=16)).json()
    assert first["message"] == second["message"]
    assert first["message"] != greedy["choices"][0]["message"]


def test_models_lists_the_served_model(client: httpx.Client) -> None:
    """/v1/models names the one model this worker serves."""
    body = client.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["tiny"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        ({**chat_body("x"), "model": "gpt-4"}, 404, "model_not_found", "model"),
        (chat_body("x", logit_bias={"1": 5}), 400, "invalid_request", "logit_bias"),
        (chat_body("x", n=2), 400, "invalid_request", "n"),
        ({"model": "tiny", "messages": []}, 400, "invalid_request", "messages"),
        (chat_body("word " * 300), 400, "context_length_exceeded", "messages"),
        (chat_body("x", max_tokens=100000), 400, "context_length_exceeded", "max_tokens"),
        (b"{not json", 400, "invalid_json", None),
        (b"[" + b"1," * 600000 + b"1]", 413, "request_too_large", None),
    ],
    ids=[
        "wrong-model",
        "unknown-param",
        "n-2",
        "no-messages",
        "prompt-too-long",
        "max-tokens-too-big",
        "bad-json",
        "body-too-large",
    ],
)
def test_bad_requests_get_openai_errors(
    client: httpx.Client, payload: Any, status: int, code: str, param: str | None
) -> None:
    """Malformed or oversized requests get a 4xx in the OpenAI error shape, naming the param."""
    if isinstance(payload, bytes):
        response = client.post(
            "/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param


def test_error_messages_do_not_echo_prompt_text(client: httpx.Client) -> None:
    """A refused request's error names fields, never the prompt's content."""
    secret = "patient-john-doe-123-45-6789"
    body = chat_body(secret, max_tokens=100000)
    body["messages"].append({"role": "user", "content": 42})
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert secret not in response.text


def test_metrics_export_the_serving_series(worker: RunningWorker, client: httpx.Client) -> None:
    """/metrics exports queue, batch, KV, latency and token series; GPU series are absent on CPU."""
    client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=4))
    text = client.get("/metrics").text
    for name in (
        "bastion_worker_num_requests_running",
        "bastion_worker_num_requests_waiting",
        "bastion_worker_queue_tokens",
        "bastion_worker_kv_cache_usage_ratio",
        "bastion_worker_time_to_first_token_seconds_bucket",
        "bastion_worker_inter_token_latency_seconds_bucket",
        "bastion_worker_e2e_request_latency_seconds_bucket",
        "bastion_worker_prompt_tokens_total",
        "bastion_worker_generation_tokens_total",
        "bastion_worker_prefill_seconds_total",
        "bastion_worker_decode_seconds_total",
    ):
        assert f"\n{name}" in text, name
    assert (worker.metric("bastion_worker_model_load_seconds") or 0) > 0
    assert (worker.metric("bastion_worker_warmup_seconds") or 0) > 0
    assert (worker.metric("bastion_worker_generation_tokens_total") or 0) >= 4
    assert "gpu_memory" not in text
    assert "cuda_forward" not in text


def test_openai_sdk_client_works(worker: RunningWorker) -> None:
    """The official openai SDK talks to the worker, JSON and streaming."""
    import openai

    sdk = openai.OpenAI(base_url=worker.url + "/v1", api_key="unused", max_retries=0)
    try:
        full = sdk.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
        )
        stream = sdk.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )
    finally:
        sdk.close()
    assert full.choices[0].message.content == streamed
    assert full.usage is not None
    assert full.usage.completion_tokens <= 8


def test_ignore_eos_and_min_tokens_extend_generation(client: httpx.Client) -> None:
    """vLLM's extensions: ignore_eos runs to max_tokens past end-of-sequence; min_tokens forbids
    end-of-sequence before that many tokens; min_tokens above max_tokens is refused by name."""
    early = None
    for seed in range(40):  # a sampled answer that ends on EOS early, whatever the tiny weights
        body = chat_body("Hello", max_tokens=40, temperature=1.0, seed=seed)
        answer = client.post("/v1/chat/completions", json=body).json()
        if (
            answer["choices"][0]["finish_reason"] == "stop"
            and answer["usage"]["completion_tokens"] < 10
        ):
            early = body
            break
    assert early is not None, "no seed ended early; the test would prove nothing"
    fixed = client.post("/v1/chat/completions", json={**early, "ignore_eos": True}).json()
    assert fixed["choices"][0]["finish_reason"] == "length"
    assert fixed["usage"]["completion_tokens"] == 40
    floor = client.post("/v1/chat/completions", json={**early, "min_tokens": 10}).json()
    assert floor["usage"]["completion_tokens"] >= 10
    refused = client.post("/v1/chat/completions", json={**early, "min_tokens": 41})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "min_tokens"

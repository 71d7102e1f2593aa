"""The real SmolLM2-135M-Instruct, encrypted and loaded through SoftHSM2, served by the worker."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from inference.artifact import encrypt_model_dir
from pki.hsm import HsmSession
from tests.fixtures.softhsm import SoftHsm
from tests.worker.worker_support import (
    RunningWorker,
    read_sse,
    run_worker,
    stream_text,
    worker_config,
)

pytestmark = [pytest.mark.model, pytest.mark.hsm]

MODEL_ID = "smollm2-135m-instruct"
_QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 2 + 2?",
    "Give me a synonym for happy.",
    "What colour is the sky on a clear day?",
    "Translate 'thank you' into Spanish.",
    "What is the boiling point of water in Celsius?",
    "Name a planet in the solar system.",
    "What do bees make?",
    "Who wrote Romeo and Juliet?",
    "What is the largest ocean on Earth?",
    "How many days are in a week?",
    "What language is spoken in Brazil?",
    "Name a fruit that is yellow.",
    "What is the opposite of cold?",
    "What gas do plants absorb?",
]


@pytest.fixture(scope="module")
def smol_worker(
    smollm2_dir: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWorker]:
    artifact = tmp_path_factory.mktemp("smol-artifact") / "smollm2.bastion"
    with HsmSession(softhsm.config) as hsm:
        encrypt_model_dir(smollm2_dir, artifact, hsm, model_id=MODEL_ID)
    model = {
        "source": "encrypted",
        "path": str(artifact),
        "name": MODEL_ID,
        "hsm": {
            "module": str(softhsm.token.module),
            "token": softhsm.token.token_label,
            "pin_file": str(softhsm.token.pin_file),
        },
    }
    config = worker_config(
        smollm2_dir,
        model=model,
        batching={"max_batch_size": 16, "max_total_tokens": 1024, "max_input_tokens": 512},
    )
    with run_worker(config) as worker:
        yield worker


def _body(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 20,
        **extra,
    }


def _stream(worker: RunningWorker, question: str) -> str:
    with (
        worker.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json=_body(question, stream=True)
        ) as response,
    ):
        assert response.status_code == 200
        events, done = read_sse(response)
    assert done
    return stream_text(events)


def test_answers_a_chat(smol_worker: RunningWorker) -> None:
    """The encrypted model, unwrapped through the HSM, answers a factual question correctly."""
    with smol_worker.client() as client:
        body = client.post("/v1/chat/completions", json=_body(_QUESTIONS[0])).json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["model"] == MODEL_ID


def test_streaming_matches_non_streaming(smol_worker: RunningWorker) -> None:
    """Greedy SSE deltas join to exactly the non-streamed answer."""
    with smol_worker.client() as client:
        full = client.post("/v1/chat/completions", json=_body(_QUESTIONS[1])).json()
    assert _stream(smol_worker, _QUESTIONS[1]) == full["choices"][0]["message"]["content"]


def test_sixteen_concurrent_streams_equal_single_requests(smol_worker: RunningWorker) -> None:
    """16 concurrent greedy streams each equal the same request served alone."""
    alone = [_stream(smol_worker, q) for q in _QUESTIONS]
    with ThreadPoolExecutor(len(_QUESTIONS)) as pool:
        together = list(pool.map(lambda q: _stream(smol_worker, q), _QUESTIONS))
    assert together == alone
    assert all(text for text in together)

"""The real SmolLM2-135M-Instruct through the encrypted path: same greedy output as plaintext."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.artifact import encrypt_model_dir, load_encrypted_model, load_model_dir
from pki.hsm import HsmConfig, HsmSession

pytestmark = [pytest.mark.hsm, pytest.mark.model]

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _greedy(loaded: object) -> str:
    tokenizer, model = loaded.tokenizer, loaded.model  # type: ignore[attr-defined]
    ids = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    return str(tokenizer.decode(out[0][ids["input_ids"].shape[1] :]))


def test_smollm2_round_trip(smollm2_dir: Path, hsm_config: HsmConfig, tmp_path: Path) -> None:
    """SmolLM2 encrypted, loaded through the HSM, generates what the plaintext model does."""
    artifact = tmp_path / "smollm2.bmdl"
    with HsmSession(hsm_config) as session:
        encrypt_model_dir(smollm2_dir, artifact, session, model_id="smollm2-135m-instruct")
    plain_text = _greedy(load_model_dir(smollm2_dir))
    encrypted = load_encrypted_model(
        artifact, hsm_config, expected_model_id="smollm2-135m-instruct"
    )
    assert encrypted.stats.bytes > 500 * 1024 * 1024
    answer = _greedy(encrypted)
    assert answer == plain_text
    assert "Paris" in answer

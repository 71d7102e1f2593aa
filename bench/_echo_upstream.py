"""A minimal OpenAI-compatible echo upstream for benchmarks (run as a separate process)."""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def chat(request: Request) -> Response:
    body = json.loads(await request.body())
    text = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            text = message.get("content") or ""
            break
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text[:64]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Response(json.dumps(answer), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

"""`make demo`'s last step: serve the packaged SmolLM2 and ask it one question.

    python -m kaito_jupyter.runtimes.inference.demo ["question"]

Starts the server the way a person would (one command), waits until it is healthy, asks over
the OpenAI chat API, prints the answer, and stops the server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from kaito_jupyter.runtimes.local_server import LOOPBACK, NotHealthy, free_port, wait_healthy

PRESET = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"


def ask(url: str, question: str) -> str:
    body = {
        "model": PRESET,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 64,
    }
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    question = argv[0] if argv else QUESTION
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "kaito_jupyter.runtimes.inference", "--preset", PRESET,
               "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
    print(
        f"$ python -m kaito_jupyter.runtimes.inference --preset {PRESET} --port {port}", flush=True
    )
    server = subprocess.Popen(command)
    try:
        try:
            wait_healthy(url, server)
        except NotHealthy as exc:
            raise SystemExit(exc.message) from None
        print(f"Q: {question}", flush=True)
        print(f"A: {ask(url, question).strip()}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

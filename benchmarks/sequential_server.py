"""A one-request-at-a-time transformers server: the serving benchmark's model of how Kaito's
transformers runtime served before v0.9 (one `generate` call per request, requests queued
behind a lock, no batching), with just enough of the OpenAI chat API for the load generator.

    python -m benchmarks.sequential_server --model DIR --port P [--threads T]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(model_dir: str, host: str, port: int, threads: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lock = threading.Lock()  # the one request being served

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"status": "Healthy"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ids = tokenizer.apply_chat_template(
                body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            kwargs = {
                "max_new_tokens": int(body.get("max_tokens") or 256),
                "do_sample": float(body.get("temperature", 1.0)) > 0,
                "pad_token_id": tokenizer.eos_token_id,
            }
            if kwargs["do_sample"]:
                kwargs["temperature"] = float(body["temperature"])
            with lock, torch.inference_mode():
                if body.get("stream"):
                    self._stream(ids, kwargs, body)
                else:
                    out = model.generate(ids, **kwargs)[0, ids.shape[1] :]
                    text = tokenizer.decode(out, skip_special_tokens=True)
                    self._send(200, _completion(body, text, ids.shape[1], len(out)))

        def _stream(self, ids, kwargs, body) -> None:
            streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            worker = threading.Thread(
                target=model.generate, args=(ids,), kwargs={**kwargs, "streamer": streamer}
            )
            worker.start()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            produced = 0
            for text in streamer:
                if text:
                    produced += 1
                    self._chunk(_delta(body, text))
            worker.join()
            self._chunk(_delta(body, None, "length"))
            self._chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, payload) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            raw = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # a burst of clients waits in the backlog, not refused

    server = Server((host, port), Handler)
    server.serve_forever()


def _completion(body, text, prompt_tokens, completion_tokens) -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _delta(body, text, finish=None) -> dict:
    delta = {"content": text} if text else {}
    return {
        "object": "chat.completion.chunk",
        "model": body.get("model", ""),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    serve(args.model, args.host, args.port, args.threads)


if __name__ == "__main__":
    main()

"""`python -m benchmarks.lm_head`: CPU time of SmolLM2-135M's LM head (49152 x 576) by the number
of rows sampled in a step, on the bf16-products path: the float16-weight head with float32 logits
the decoder uses (OutputLinear), the bf16 one it replaced (BlockLinear), and float32 (Linear).

A microbenchmark, not a page section: random weights of the head's shape, 1 torch thread, the
three run alternately, and the lower quartile of the thread's CPU time, which a shared machine
disturbs least.
"""

from __future__ import annotations

import time

import torch


def main(rows=(2, 16, 32, 64), repeats: int = 25) -> None:
    from kaito_jupyter.runtimes.inference.decoder import BlockLinear, Linear, OutputLinear, Scratch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    weight = torch.randn(49152, 576) * 0.05
    heads = {
        "float16 weights (OutputLinear)": OutputLinear(weight),
        "bf16 (BlockLinear)": BlockLinear(weight, None, Scratch(torch.bfloat16)),
        "float32 (Linear)": Linear(weight),
    }
    print("CPU ms per call, by sampled rows")
    for n in rows:
        x = torch.randn(n, 576)
        times: dict[str, list[float]] = {name: [] for name in heads}
        with torch.inference_mode():
            for _ in range(repeats):
                for name, head in heads.items():
                    start = time.thread_time()
                    head(x)
                    times[name].append(time.thread_time() - start)
        cells = [f"{name} {sorted(t)[len(t) // 4] * 1e3:.1f}" for name, t in times.items()]
        print(f"{n:3d} rows: " + ", ".join(cells))


if __name__ == "__main__":
    main()

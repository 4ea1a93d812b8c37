"""What the CPU reports and what the inference server makes of it: the product dtype per CPU,
and --dtype/--cpu-products combinations (pure decisions, no torch)."""

from __future__ import annotations

import pytest
from kaito_jupyter.runtimes import cpu
from kaito_jupyter.runtimes.inference.device import choose_dtype, choose_products

from kaito_jupyter.errors import RuntimeFailure

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
"""
OLD = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2673 v4 @ 2.30GHz
flags\t\t: fpu sse avx2 fma
"""


def test_cpuinfo_is_read_for_the_model_and_the_flags_that_pick_kernels():
    assert cpu.model_name(XEON) == "Intel(R) Xeon(R) Processor"
    assert cpu.isa_flags(XEON) == [
        "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
        "amx_tile", "amx_bf16", "amx_int8",
    ]  # fmt: skip
    assert cpu.isa_flags(OLD) == ["avx2", "fma"]
    assert cpu.native_bf16(XEON) and not cpu.native_bf16(OLD)
    assert cpu.native_bf16("flags\t\t: fpu avx512f avx512_bf16")  # AMD EPYC (Zen 4)
    assert cpu.isa_flags("") == [] and not cpu.native_bf16("")


@pytest.mark.parametrize(
    ("requested", "native", "want"),
    [
        ("auto", True, "bfloat16"),
        ("auto", False, "float32"),
        ("float32", True, "float32"),
        ("bfloat16", False, "bfloat16"),  # asked for: emulated, slow, but honoured
    ],
)
def test_a_float32_model_on_cpu_multiplies_in_bf16_where_the_cpu_does(requested, native, want):
    assert choose_products("cpu", "float32", requested, native) == want


def test_half_precision_models_and_gpus_multiply_in_their_own_dtype():
    assert choose_dtype("cpu", None, []) == "float32"
    assert choose_products("cpu", "bfloat16", "auto", False) == "bfloat16"
    assert choose_products("cuda", "float16", "auto", True) == "float16"
    assert choose_products("cuda", "bfloat16", "float32", True) == "bfloat16"  # CPU-only option
    with pytest.raises(RuntimeFailure, match="--cpu-products float32 needs a float32 model"):
        choose_products("cpu", "bfloat16", "float32", True)


def test_loading_runs_on_a_thread_that_has_ended_and_hands_back_its_result_or_error():
    """The model loads on a thread of its own, so its OpenMP team ends before the engine runs
    (two teams made libgomp stop spinning: issue 17's 2-thread slowdown)."""
    import threading

    from kaito_jupyter.runtimes.inference.loader import on_own_thread

    seen = []

    def work(x):
        seen.append(threading.current_thread())
        return x * 2

    assert on_own_thread(work, 21) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def fails():
        raise RuntimeError("no weights")

    with pytest.raises(RuntimeError, match="no weights"):
        on_own_thread(fails)

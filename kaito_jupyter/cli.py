"""The `kaito` command: the magics' verbs from a shell.

kaito validate -f workspace.yaml      # exit 1 with every problem if invalid
kaito presets [--tuning]              # the preset catalog
kaito skus [--cloud azure|aws]        # the GPU instance types
kaito explain PRESET --instance-type T [--count N]
kaito apply -f ws.yaml [--wait] | get [NAME] [-o wide|yaml|json] | describe NAME | delete NAME
kaito wait NAME | nodes | logs NAME [-f] [--tail N] | chat NAME "prompt"
kaito deploy PRESET [--adapter IMAGE:0.8] | tune PRESET --input URL --output IMAGE | use BACKEND
kaito controller --backend local [--idle-exit SECONDS]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kaito_jupyter.errors import KaitoError, ValidationError


def _files(paths: list[str]) -> list[str]:
    """Expand directories to the YAML files they hold; '-' is standard input."""
    out = []
    for p in paths:
        path = Path(p)
        if p != "-" and path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise KaitoError(f"{p} holds no .yaml or .yml files")
            out += [str(f) for f in found]
        else:
            out.append(p)
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    from kaito_jupyter import api, config

    allowed = config.load().allowed_private_registries
    old = None
    if args.old:
        old = api.check_file(args.old)[0].workspace
    failed = False
    report = []
    for name in _files(args.filename):
        try:
            if name == "-":
                checked = api.check_text(
                    sys.stdin.read(), "<stdin>", old=old, allowed_registries=allowed
                )
            else:
                if not Path(name).exists():
                    raise KaitoError(f"{name}: no such file")
                checked = api.check_text(
                    Path(name).read_text(), name, old=old, allowed_registries=allowed
                )
        except ValidationError as exc:
            failed = True
            report.append(
                {
                    "file": name,
                    "valid": False,
                    "errors": [str(i) for i in exc.issues],
                    "warnings": [str(i) for i in exc.warnings],
                }
            )
            if args.output != "json":
                print(f"{name}: invalid", file=sys.stderr)
                for issue in [*exc.issues, *exc.warnings]:
                    print(f"  {issue}", file=sys.stderr)
            continue
        for c in checked:
            ws = c.workspace
            report.append(
                {
                    "file": name,
                    "workspace": ws.name,
                    "valid": True,
                    "warnings": [str(i) for i in c.warnings],
                }
            )
            if args.output != "json":
                instance = (ws.resource.instance_type if ws.resource else None) or "existing nodes"
                print(
                    f"workspace.kaito.sh/{ws.name} valid ({ws.mode}: {ws.preset_name or 'custom template'} on {instance})"
                )
                for issue in c.warnings:
                    print(f"  {issue}")
    if args.output == "json":
        print(json.dumps(report, indent=2))
    return 1 if failed else 0


def cmd_presets(args: argparse.Namespace) -> int:
    from kaito_jupyter.presentation import presets_table

    print(presets_table(tuning_only=args.tuning, include_deprecated=args.all))
    return 0


def cmd_skus(args: argparse.Namespace) -> int:
    from kaito_jupyter.presentation import skus_table

    print(skus_table(args.cloud))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from kaito_jupyter.presentation import explain

    print(explain(args.preset, args.instance_type, args.count))
    return 0


# ------------------------------------------------------------------ workspace verbs
# The magics' verbs from a shell, all through the command layer (kaito_jupyter.commands).


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    if not Path(name).exists():
        raise KaitoError(f"{name}: no such file")
    return Path(name).read_text()


def _print_applied(applied) -> None:
    for a in applied:
        print(f"workspace.kaito.sh/{a.workspace.name} {a.action}")


def _wait_and_report(name: str, timeout: float | None, backend=None) -> int:
    from kaito_jupyter import commands
    from kaito_jupyter.workspace_text import progress_line

    last = [""]

    def show(stored) -> None:
        line = progress_line(stored)
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    stored = commands.wait(name, backend=backend, timeout=timeout, on_change=show)
    result = commands.phase(stored)
    print(f"workspace.kaito.sh/{name} {result}", flush=True)
    return 1 if result == "failed" else 0


def cmd_apply(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands
    from kaito_jupyter.backends import open_backend

    backend = open_backend()
    applied = []
    for name in _files(args.filename):
        applied += commands.apply(
            _read_input(name), source=name, backend=backend, dry_run=args.dry_run
        )
    _print_applied(applied)
    if args.wait and not args.dry_run:
        return max((_wait_and_report(a.workspace.name, args.timeout, backend) for a in applied),
                   default=0)  # fmt: skip
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    import yaml

    from kaito_jupyter import commands
    from kaito_jupyter.api import table as ws_table

    found = [commands.get(args.name)] if args.name else commands.list_workspaces()
    if args.output in ("yaml", "json"):
        items = [s.data for s in found]
        doc = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        print(json.dumps(doc, indent=2) if args.output == "json"
              else yaml.safe_dump(doc, sort_keys=False), end="" if args.output == "yaml" else "\n")  # fmt: skip
        return 0
    if not found:
        print("No workspaces found.", file=sys.stderr)
        return 0
    wide = args.output == "wide"
    nodes = commands.nodes() if wide else ()  # COST/H prices the nodes each workspace runs on
    print(ws_table.render([s.workspace for s in found], wide=wide, nodes=nodes))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands
    from kaito_jupyter.workspace_text import describe_text

    print(describe_text(commands.describe(args.name)))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    for name in args.name:
        commands.delete(name, wait=args.wait, timeout=args.timeout)
        print(f'workspace.kaito.sh "{name}" deleted' if args.wait
              else f'workspace.kaito.sh "{name}" deleting')  # fmt: skip
    return 0


def cmd_wake(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    for name in args.name:
        commands.wake(name)
        print(f'workspace.kaito.sh "{name}" waking (its nodes take a few minutes)')
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    return _wait_and_report(args.name, args.timeout)


def cmd_nodes(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands
    from kaito_jupyter.workspace_text import nodes_table

    print(nodes_table(commands.nodes()))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    try:
        for line in commands.logs(args.name, follow=args.follow, tail=args.tail):
            print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    for piece in commands.chat(
        args.name,
        [{"role": "user", "content": prompt}],
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        adapter=args.adapter,
    ):
        print(piece, end="", flush=True)
    print()
    return 0


def _apply_built(data: dict, args: argparse.Namespace) -> int:
    """Apply a workspace deploy or tune built, then report it and wait if asked."""
    from kaito_jupyter import commands

    applied = commands.apply_workspace(data, dry_run=args.dry_run)
    _print_applied([applied])
    if args.wait and not args.dry_run:
        return _wait_and_report(applied.workspace.name, args.timeout)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    data = commands.deploy_workspace(
        args.preset,
        name=args.name,
        instance_type=args.instance_type,
        count=args.count,
        adapters=[commands.adapter_spec(a) for a in args.adapter] or None,
    )
    return _apply_built(data, args)


def cmd_tune(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands

    data = commands.tune_workspace(
        args.preset,
        method=args.method,
        inputs=args.input,
        output=args.output,
        name=args.name,
        instance_type=args.instance_type,
        config_map=args.config,
        push_secret=args.push_secret,
    )
    return _apply_built(data, args)


def cmd_use(args: argparse.Namespace) -> int:
    from kaito_jupyter import commands
    from kaito_jupyter.backends import open_backend

    settings = commands.use(
        args.backend,
        context=args.context,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        subscription=args.subscription,
        resource_group=args.resource_group,
        cluster=args.cluster,
    )
    print(f"using {open_backend(settings).target()}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    """`kaito install`: the Workspace CRD (kubernetes backend); --print writes the manifests."""
    from kaito_jupyter import config

    if args.print:
        import yaml

        from kaito_jupyter.backends.kubernetes import crd, install

        print(yaml.safe_dump(crd.definition(), sort_keys=False), end="")
        for name in ("controller-rbac.yaml", "user-rbac.yaml"):
            print("---\n" + install.manifest(name), end="")
        return 0
    from kaito_jupyter.backends.kubernetes.install import install
    from kaito_jupyter.backends.kubernetes.kube import Kube

    settings = config.load()
    kube = Kube(settings.kubeconfig, settings.context, settings.namespace)
    print(install(kube, dry_run=args.dry_run, force=args.force))
    return 0


def cmd_controller(args: argparse.Namespace) -> int:
    """`kaito controller`: the reconciler, headless, until interrupted."""
    import logging

    from kaito_jupyter import config
    from kaito_jupyter.backends import run_controller

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = config.load()
    backend = args.backend or settings.backend
    options: dict = {}
    if backend == "local":
        options["idle_exit"] = args.idle_exit
        if args.lease_seconds is not None:
            options["lease_seconds"] = args.lease_seconds
    else:
        if args.all_namespaces:
            options["namespace"] = None
        elif args.namespace:
            options["namespace"] = args.namespace
        if args.workers is not None:
            options["workers"] = args.workers
    try:
        return run_controller(settings, backend, **options)
    except KeyboardInterrupt:
        return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a whole number >= 1, not {text!r}")
    return value


def _add_workspace_verbs(sub) -> None:
    def timeout(p, default=None):
        p.add_argument("--timeout", type=float, default=default, help="seconds to wait at most")

    a = sub.add_parser("apply", help="create or update workspaces from YAML")
    a.add_argument("-f", "--filename", action="append", required=True,
                   help="a YAML file, a directory of them, or - for stdin (repeatable)")  # fmt: skip
    a.add_argument("--dry-run", action="store_true", help="check and show, store nothing")
    a.add_argument("--wait", action="store_true", help="wait until ready (or succeeded, failed)")
    timeout(a)
    a.set_defaults(func=cmd_apply)

    g = sub.add_parser("get", help="list workspaces (or one) with their readiness")
    g.add_argument("name", nargs="?")
    g.add_argument("-o", "--output", choices=["wide", "yaml", "json"])
    g.set_defaults(func=cmd_get)

    d = sub.add_parser("describe", help="a workspace's spec, conditions and events")
    d.add_argument("name")
    d.set_defaults(func=cmd_describe)

    rm = sub.add_parser("delete", help="delete workspaces and what they run")
    rm.add_argument("name", nargs="+")
    rm.add_argument("--wait", action="store_true", help="return once it is gone")
    timeout(rm, 300.0)
    rm.set_defaults(func=cmd_delete)

    wk = sub.add_parser("wake", help="scale back up workspaces their idle timeout scaled to zero")
    wk.add_argument("name", nargs="+")
    wk.set_defaults(func=cmd_wake)

    w = sub.add_parser("wait", help="wait until a workspace is ready, succeeded or failed")
    w.add_argument("name")
    timeout(w)
    w.set_defaults(func=cmd_wait)

    n = sub.add_parser("nodes", help="the nodes that run workspaces (locally: this machine)")
    n.set_defaults(func=cmd_nodes)

    lg = sub.add_parser("logs", help="a workspace's runtime logs")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, help="only the last N lines")
    lg.set_defaults(func=cmd_logs)

    ch = sub.add_parser("chat", help='ask a workspace\'s model: kaito chat NAME "prompt"')
    ch.add_argument("name")
    ch.add_argument("prompt", help="the prompt, or - for stdin")
    ch.add_argument("--max-tokens", type=int)
    ch.add_argument("--temperature", type=float)
    ch.add_argument("--adapter", help="one of the workspace's adapters, by name")
    ch.set_defaults(func=cmd_chat)

    dp = sub.add_parser("deploy", help="serve a preset (builds and applies the Workspace)")
    dp.add_argument("preset")
    dp.add_argument("--name")
    dp.add_argument("--instance-type", "-i")
    dp.add_argument("--count", type=int)
    dp.add_argument("--adapter", action="append", default=[], metavar="IMAGE_OR_DIR[:STRENGTH]")
    dp.add_argument("--dry-run", action="store_true")
    dp.add_argument("--wait", action="store_true")
    timeout(dp)
    dp.set_defaults(func=cmd_deploy)

    t = sub.add_parser("tune", help="fine-tune a preset with QLoRA or LoRA")
    t.add_argument("preset")
    t.add_argument("--method", choices=["qlora", "lora"], default="qlora")
    t.add_argument("--input", action="append", required=True,
                   help="a dataset URL (repeatable), or one image or directory")  # fmt: skip
    t.add_argument("--output", required=True, help="an image reference or a directory")
    t.add_argument("--name")
    t.add_argument("--instance-type", "-i")
    t.add_argument("--config", help="the ConfigMap holding training_config.yaml")
    t.add_argument("--push-secret")
    t.add_argument("--dry-run", action="store_true")
    t.add_argument("--wait", action="store_true")
    timeout(t)
    t.set_defaults(func=cmd_tune)

    u = sub.add_parser("use", help="point every process at a backend (writes kaito.yaml)")
    u.add_argument("backend", choices=["local", "kubernetes", "aks"])
    for flag in ("--context", "--namespace", "--kubeconfig", "--subscription",
                 "--resource-group", "--cluster"):  # fmt: skip
        u.add_argument(flag)
    u.set_defaults(func=cmd_use)

    co = sub.add_parser("controller", help="run the workspace reconciler headless")
    co.add_argument(
        "--backend", choices=["local", "kubernetes"], help="default: the configured one"
    )
    co.add_argument("--idle-exit", type=float, metavar="SECONDS",
                    help="local: exit after this long with nothing to run (and at once if another "
                    "controller leads)")  # fmt: skip
    co.add_argument("--lease-seconds", type=float, help="local: lease duration (default 15)")
    co.add_argument("--namespace", help="kubernetes: reconcile only this namespace")
    co.add_argument(
        "-A", "--all-namespaces", action="store_true", help="kubernetes: every namespace"
    )
    co.add_argument("--workers", type=_positive_int, metavar="N",
                    help="kubernetes: workspaces reconciled at once (default 8)")  # fmt: skip
    co.add_argument("--log-level", default="INFO")
    co.set_defaults(func=cmd_controller)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kaito",
        description="Kaito workspaces from a shell: apply, watch, chat, tune; presets and GPU instance types.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser(
        "validate", help="check Workspace YAML the way Kaito's admission webhook would"
    )
    v.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a YAML file, a directory of them, or - for stdin (repeatable)",
    )
    v.add_argument(
        "--old", help="the current version of the workspace, to check an update (immutable fields)"
    )
    v.add_argument("-o", "--output", choices=["text", "json"], default="text")
    v.set_defaults(func=cmd_validate)

    p = sub.add_parser("presets", help="list the model presets")
    p.add_argument("--tuning", action="store_true", help="only presets that can be fine-tuned")
    p.add_argument("--all", action="store_true", help="include deprecated presets")
    p.set_defaults(func=cmd_presets)

    s = sub.add_parser("skus", help="list the GPU instance types")
    s.add_argument("--cloud", choices=["azure", "aws"])
    s.set_defaults(func=cmd_skus)

    e = sub.add_parser(
        "explain", help="how a preset fits an instance type: GPUs, memory headroom, dtype"
    )
    e.add_argument("preset")
    e.add_argument("--instance-type", "-i", required=True)
    e.add_argument("--count", type=int, default=1, help="number of nodes (default 1)")
    e.set_defaults(func=cmd_explain)

    i = sub.add_parser("install", help="install the Workspace CRD into the cluster (kubernetes)")
    i.add_argument("--dry-run", action="store_true", help="ask the API server, change nothing")
    i.add_argument("--print", action="store_true", help="print the CRD and RBAC manifests instead")
    i.add_argument("--force", action="store_true", help="apply the CRD even when it is current")
    i.set_defaults(func=cmd_install)

    _add_workspace_verbs(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KaitoError as exc:
        from kaito_jupyter.presentation import error_text

        print(f"error: {error_text(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kaito presets | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

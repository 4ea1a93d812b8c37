"""The `kaito` command: the magics' verbs from a shell.

kaito validate -f workspace.yaml      # exit 1 with every problem if invalid
kaito presets [--tuning]              # the preset catalog
kaito skus [--cloud azure|aws]        # the GPU instance types
kaito explain PRESET --instance-type T [--count N]
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
    from kaito_jupyter.backends import open_backend, run_controller

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = config.load()
    if args.backend:
        settings.backend = args.backend
    options = {}
    if args.all_namespaces:
        options["namespace"] = None
    elif args.namespace:
        options["namespace"] = args.namespace
    try:
        said = run_controller(settings, open_backend(settings), **options)
    except KeyboardInterrupt:
        return 0
    if said:
        print(said)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kaito",
        description="Kaito workspaces from a shell: validate, inspect presets and GPU instance types.",
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

    c = sub.add_parser("controller", help="run the workspace reconciler headless")
    c.add_argument("--backend", choices=["local", "kubernetes"], help="default: the configured one")
    c.add_argument("--namespace", help="reconcile only this namespace (kubernetes)")
    c.add_argument(
        "-A", "--all-namespaces", action="store_true", help="every namespace (kubernetes)"
    )
    c.add_argument("--log-level", default="INFO")
    c.set_defaults(func=cmd_controller)
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

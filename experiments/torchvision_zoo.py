"""A uniform 50% L2 plan on 16 torchvision models, tried as a new user would: find_groups, then apply_plan.

    python3 -m venv /work/tvenv
    /work/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/tvenv/bin/pip install -e . "torch==2.14.1"
    OMP_NUM_THREADS=1 /work/tvenv/bin/python experiments/torchvision_zoo.py --out torchvision_zoo.md

torchvision does not import beside the CPU torch the project's own environment pins, so this runs in a
separate one and is not part of CI. Random weights (``weights=None``), one 1x3xSxS input (224 where the model
needs it, ``--size`` elsewhere). For each model: the groups found (and how many the dry run left out, with a
warning each), the seconds to enumerate and to apply, MACs before and after, and whether the pruned model
runs and keeps its output shapes. ``--models`` picks some; each model runs in its own process so that one
crash or leak does not take the others with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "densenet121",
    "vgg11_bn",
    "squeezenet1_0",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "googlenet",
    "fcn_resnet50",
    "deeplabv3_mobilenet_v3_large",
]
SEGMENTATION = {"fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"}
NEEDS_224 = {"vit_b_16", "swin_t"}  # ViT's position embedding fixes the size; swin_t is timed as users run it


def build(name: str) -> object:
    import torchvision

    module = torchvision.models.segmentation if name in SEGMENTATION else torchvision.models
    kwargs = {"weights_backbone": None} if name in SEGMENTATION else {}
    if name == "googlenet":
        kwargs["init_weights"] = True  # silences the "default init changed" warning
    return getattr(module, name)(weights=None, **kwargs)


def run_one(name: str, size: int) -> dict[str, object]:
    """One model's row; every failure is caught and given as one line."""
    import torch

    from autoprune.engine import UnsupportedGroupWarning, apply_plan, call_model, find_groups, output_tensors
    from autoprune.plan import PruningPlan

    torch.manual_seed(0)
    row: dict[str, object] = {"model": name, "size": size}
    model = build(name).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in output_tensors(call_model(model, x))]
    stage = "enumerate"
    try:
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnsupportedGroupWarning)
            groups = find_groups(model, x)
        row["enumerate_s"] = time.perf_counter() - started
        left_out = [str(w.message) for w in caught if issubclass(w.category, UnsupportedGroupWarning)]
        row["groups"], row["left_out"] = len(groups), len(left_out)
        row["left_out_reasons"] = left_out
        stage = "apply"
        started = time.perf_counter()
        pruned, report = apply_plan(model, x, PruningPlan.uniform(groups, 0.5, "l2"))
        row["apply_s"] = time.perf_counter() - started
        row["macs_before"], row["macs_after"] = report.macs_before, report.macs_after
        stage = "run the pruned model"
        with torch.no_grad():
            after = [tuple(t.shape) for t in output_tensors(call_model(pruned.eval(), x))]
        if after != shapes:
            raise RuntimeError(f"output shapes changed from {shapes} to {after}")
        row["result"] = "ok"
    except Exception as exc:  # the table reports every failure, one line each
        text = " ".join(str(exc).split())
        row["result"] = f"error ({stage}): {type(exc).__name__}: {text[:160]}"
    return row


def _fmt_macs(value: object) -> str:
    return f"{float(value) / 1e9:.3f}G" if isinstance(value, (int, float)) else "-"


def _fmt_s(value: object) -> str:
    return f"{float(value):.1f}" if isinstance(value, (int, float)) else "-"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | input | groups (left out) | enumerate s | apply s | MACs before | MACs after | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        groups = f"{r['groups']} ({r['left_out']})" if "groups" in r else "-"
        lines.append(
            f"| {r['model']} | {r['size']} | {groups} | {_fmt_s(r.get('enumerate_s'))} | {_fmt_s(r.get('apply_s'))} "
            f"| {_fmt_macs(r.get('macs_before'))} | {_fmt_macs(r.get('macs_after'))} | {r['result']} |"
        )
    ok = sum(r["result"] == "ok" for r in rows)
    lines.append(f"\n{ok} of {len(rows)} models pruned and ran with their output shapes kept.")
    left = [(r["model"], r.get("left_out_reasons") or []) for r in rows]
    if any(messages for _, messages in left):
        lines.append("\nGroups left out by the dry run (one warning each; the first one's reason):\n")
        for model, messages in left:
            if messages:
                names = [str(m).split("'")[1] for m in messages]  # type: ignore[union-attr]
                reason = str(messages[0]).split("left out of the search: ", 1)[-1].rsplit("; add ", 1)[0]  # type: ignore[index]
                lines.append(f"- {model}: {', '.join(names)}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--size", type=int, default=128, help="input side for models that allow any size")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one model, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.size)))
        return 0
    rows = []
    for name in args.models:
        size = 224 if name in NEEDS_224 else args.size
        command = [sys.executable, __file__, "--one", name, "--size", str(size)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=os.environ.copy())
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines:
                row = json.loads(lines[-1])
            else:
                tail = " ".join(done.stderr.strip().splitlines()[-1:])
                row = {"model": name, "size": size, "result": f"error: process exited {done.returncode}: {tail[:160]}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "size": size, "result": f"error: over {args.timeout:.0f} s"}
        rows.append(row)
        print(f"{name}: {row['result']} ({_fmt_s(row.get('enumerate_s'))} s enumerate)", flush=True)
    text = table(rows)
    print(text)
    if args.out is not None:
        command = " ".join(["OMP_NUM_THREADS=1", "python", "experiments/torchvision_zoo.py", *(argv or sys.argv[1:])])
        args.out.write_text(f"```\n{command}\n```\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

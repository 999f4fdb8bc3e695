"""The Hugging Face artifact: ``hf/``, a ``save_pretrained`` folder (safetensors weights, ``config.json`` with the
pruned heads, KV heads, head dim, MLP width and hidden size) that ``AutoModelFor*.from_pretrained`` loads
without autoprune.

Its reload check runs in a fresh Python process that imports only transformers, torch and safetensors, with
autoprune made unimportable (an import hook refuses it) and its absence from ``sys.modules`` asserted: the
folder is loaded with the Auto class whose mapping holds the model's class, run on the probe batch, and its
outputs compared with the in-memory model's, as every other artifact's. A plan whose layers differ in shape
(or a family whose config cannot express the pruning) is refused in one line; the other artifacts are written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.engine._graph._conv1d import CONV1D_MARK
from autoprune.export._hf_config import HfShapeError, derive_hf_config, is_hf_model

__all__ = ["HF_FOLDER", "auto_class_name", "restore_conv1d", "write_hf_folder"]

HF_FOLDER = "hf"
RELOAD_TIMEOUT_S = 600
# Tried in order: the first whose mapping holds the model's class loads the folder.
AUTO_CLASSES = (
    "AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModelForImageClassification",
    "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM", "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering", "AutoModelForAudioClassification", "AutoModel",
)  # fmt: skip

# Run as `python -c`: no autoprune import is possible (the hook refuses it), and none is made.
_RELOAD_SCRIPT = """
import importlib.abc, json, sys
class _NoAutoprune(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "autoprune" or name.startswith("autoprune."):
            raise ImportError("autoprune is not installed here")
        return None
sys.meta_path.insert(0, _NoAutoprune())
import torch, transformers
from safetensors.torch import load_file, save_file
folder, auto_name = sys.argv[1], sys.argv[2]
model = getattr(transformers, auto_name).from_pretrained(folder + "/hf").eval()
probe = load_file(folder + "/probe.safetensors")
with torch.no_grad():
    out = model(**probe)
tensors = {}
def collect(value, prefix):
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.contiguous()
    elif isinstance(value, dict):
        for k, v in value.items():
            collect(v, f"{prefix}.{k}")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            collect(v, f"{prefix}.{i}")
collect(dict(out.items()) if hasattr(out, "items") else out, "out")
save_file({f"{i:04d}": t for i, t in enumerate(tensors.values())}, folder + "/outputs.safetensors")
print(json.dumps({"class": type(model).__name__, "autoprune_imported": "autoprune" in sys.modules}))
"""


def restore_conv1d(model: nn.Module) -> int:
    """Turn the marked ``nn.Linear`` twins of transformers' ``Conv1D`` back (in place); returns how many."""
    from transformers.pytorch_utils import Conv1D

    found = [(n, m) for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and getattr(m, CONV1D_MARK, False)]
    modules = dict(model.named_modules())
    for name, linear in found:
        conv = Conv1D(linear.out_features, linear.in_features)
        with torch.no_grad():
            conv.weight = nn.Parameter(linear.weight.detach().t().contiguous())
            if linear.bias is not None:
                conv.bias = nn.Parameter(linear.bias.detach().clone())
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, conv)
    return len(found)


def auto_class_name(model: nn.Module) -> str:
    """The first transformers Auto class whose mapping builds ``type(model)`` from its config."""
    import transformers

    for name in AUTO_CLASSES:
        try:
            if getattr(transformers, name)._model_mapping[type(model.config)] is type(model):
                return name
        except (KeyError, AttributeError):
            continue
    raise HfShapeError(f"no transformers Auto class loads {type(model).__name__}")


def _probe_dict(probe: Any) -> dict[str, torch.Tensor]:
    if not isinstance(probe, dict) or not all(isinstance(v, torch.Tensor) for v in probe.values()):
        raise HfShapeError("the reload check needs dict example inputs (keyword tensors), as a Hugging Face model takes")
    return {str(k): v.detach().cpu().contiguous() for k, v in probe.items()}


def _reload(folder: Path, auto_name: str, probe: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Load ``folder/hf`` in a fresh process without autoprune; its outputs on ``probe`` and what it reported."""
    from safetensors.torch import load_file, save_file

    save_file(probe, str(folder / "probe.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    with tempfile.TemporaryDirectory() as cwd:  # not the repository: nothing there is importable
        done = subprocess.run(
            [sys.executable, "-I", "-c", _RELOAD_SCRIPT, str(folder.resolve()), auto_name],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=RELOAD_TIMEOUT_S, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"from_pretrained in a fresh process failed: {last}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outputs = load_file(str(folder / "outputs.safetensors"))
    return [outputs[k] for k in sorted(outputs)], report


def write_hf_folder(model: nn.Module, folder: Path) -> tuple[dict[str, Any], Any]:
    """Write ``folder/hf`` for a pruned Hugging Face model; the record, and the reloaded outputs (None when refused).

    Refusals (layers of different shapes, a config that cannot express the pruning) are a record with status
    ``refused`` and one line of detail."""
    hf_model = copy.deepcopy(model).cpu().eval()
    restore_conv1d(hf_model)
    try:
        config = derive_hf_config(model, hf_model)
        auto_name = auto_class_name(hf_model)
    except HfShapeError as exc:
        return {"status": "refused", "detail": f"hf/ not written: {exc}"}, None
    hf_model.config = config
    save: Any = hf_model.save_pretrained
    with contextlib.redirect_stderr(io.StringIO()):  # its shard-writing progress bar
        save(str(folder / HF_FOLDER))
    files = sorted(p.name for p in (folder / HF_FOLDER).iterdir())
    if not any(f.endswith(".safetensors") for f in files):
        raise RuntimeError(f"save_pretrained wrote no safetensors weights (found {files})")
    record: dict[str, Any] = {
        "status": "ok",
        "auto_class": auto_name,
        "files": files,
        "config_changes": _changes(model.config, config),
        "bytes": {f"{HF_FOLDER}/{f}": (folder / HF_FOLDER / f).stat().st_size for f in files},
    }
    return record, auto_name


def _changes(before: Any, after: Any) -> dict[str, list[int]]:
    """The config keys the pruning changed: ``{key: [before, after]}``."""
    old, new = before.to_dict(), after.to_dict()
    return {k: [old.get(k), v] for k, v in sorted(new.items()) if isinstance(v, int) and old.get(k) != v}


def reload_outputs(folder: Path, auto_name: str, probe: Any) -> tuple[list[torch.Tensor], dict[str, Any]]:
    return _reload(folder, auto_name, _probe_dict(probe))


def applies(model: nn.Module) -> bool:
    return is_hf_model(model)

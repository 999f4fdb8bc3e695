"""Load an export's ``hf/`` folder the way a user without autoprune would, and score it on the test split.

    python experiments/hf_text/reload.py runs/hf-text/export

Only transformers and torch are imported for the model (the data comes from ``hf_text_data.py`` beside this
file); an import hook refuses autoprune, so the check holds even where it is installed.
"""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path


class _NoAutoprune(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name.split(".")[0] == "autoprune":
            raise ImportError("autoprune is not installed here")
        return None


def main(export: str) -> None:
    sys.meta_path.insert(0, _NoAutoprune())
    import torch
    from transformers import AutoModelForSequenceClassification

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hf_text_data import loaders

    folder = Path(export) / "hf"
    if not (folder / "config.json").is_file():
        # from_pretrained would read a missing folder as a Hub repo id and fail with a traceback about repo names.
        sys.exit(
            f"reload.py: no save_pretrained folder at {folder}; run `autoprune export ... --knee --out {export}` first"
        )
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loaders()[2]:
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(dim=1) == labels).sum())
            total += len(labels)
    width = model.config.intermediate_size
    print(f"{type(model).__name__} from {export}/hf: intermediate_size {width}, test accuracy {correct / total:.4f}")
    assert "autoprune" not in sys.modules


if __name__ == "__main__":
    main(sys.argv[1])

"""The user's recipe and the built-in evaluator's options: a user evaluator from config or Python, registered and
user losses (dict batches), a steps budget, distillation from the unpruned model, bf16 autocast, a bounded
validation subset, and one-line errors naming the key."""

from __future__ import annotations

import copy
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, write_config
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, TensorDataset

import autoprune
from autoprune.config import config_from_dict, load_config
from autoprune.engine import apply_plan, find_groups
from autoprune.errors import ConfigError
from autoprune.evaluate import CPU, Evaluator, Runtime, build_evaluator, check_evaluator, load_user_evaluator
from autoprune.metrics import accuracy
from autoprune.models import build_model
from autoprune.plan import PruningPlan
from autoprune.study import check_registered_names

TESTS = Path(__file__).resolve().parent
X = torch.zeros(1, 1, 16, 16)


def _loader(n: int = 48, batch_size: int = 16, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


def _small_net() -> nn.Module:
    sys.path.insert(0, str(TESTS))
    try:
        from user_models import SmallNet
    finally:
        sys.path.remove(str(TESTS))
    torch.manual_seed(0)
    return SmallNet()


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class _CountingOptimizerSteps:
    """Counts every optimizer step in the process while active (torch's global step post-hook)."""

    def __enter__(self) -> _CountingOptimizerSteps:
        self.count = 0

        def hook(_opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
            self.count += 1

        self._handle = register_optimizer_step_post_hook(hook)
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.remove()


# --- the steps budget and the optimizer ---------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_steps_budget_runs_exactly_that_many_optimizer_steps(optimizer):
    loader = _loader()  # 3 batches a pass: 7 steps cycle it into a third pass
    model = _small_net()
    evaluator = Evaluator(train_loader=loader, val_loader=loader, optimizer=optimizer)
    passes: list[int] = []
    with _CountingOptimizerSteps() as counted:
        evaluator.finetune(model, epochs=5, steps=7, lr=0.01, seed=0, on_epoch=lambda epoch, _loss: passes.append(epoch))
    assert counted.count == 7
    assert passes == [1, 2, 3]  # two whole passes and a partial one; epochs=5 is overridden
    with _CountingOptimizerSteps() as counted:
        evaluator.finetune(model, epochs=2, steps=None, lr=0.01, seed=0)
    assert counted.count == 2 * len(loader)


def test_adamw_is_the_optimizer_asked_for():
    config = config_from_dict(tiny_config(Path("unused"), finetune={"optimizer": "adamw", "steps": 4}))
    loader = _loader()
    evaluator = build_evaluator(config, train_loader=loader, val_loader=loader, metric=accuracy, runtime=CPU)
    seen: list[type] = []
    handle = register_optimizer_step_post_hook(lambda opt, _a, _k: seen.append(type(opt)))
    try:
        evaluator.finetune(_small_net(), epochs=1, steps=config.finetune.steps, lr=1e-3, seed=0)
    finally:
        handle.remove()
    assert seen == [torch.optim.AdamW] * 4


# --- distillation ---------------------------------------------------------------------------------------------


def _teacher_and_student(base_weights: Path) -> tuple[nn.Module, nn.Module]:
    teacher = build_model("resnet_small", in_channels=1, num_classes=10)
    teacher.load_state_dict(torch.load(base_weights))
    teacher.eval()
    groups = find_groups(teacher, X, ignore=["fc"])
    student, _ = apply_plan(teacher, X, PruningPlan.uniform(groups, 0.5, "l1"))
    return teacher, student


def test_distillation_changes_the_finetune_and_is_reproducible(base_weights, digits_data):
    teacher, pruned = _teacher_and_student(base_weights)
    teacher_weights = _params(teacher)

    def finetuned(distill: bool) -> list[torch.Tensor]:
        overrides = {"distill": {"weight": 0.7, "temperature": 3.0}} if distill else {}
        config = config_from_dict(tiny_config(Path("unused"), finetune={"steps": 5, **overrides}))
        evaluator = build_evaluator(
            config, train_loader=digits_data.train, val_loader=digits_data.val, metric=accuracy, runtime=CPU, teacher=teacher
        )
        assert (evaluator.distill is not None) == distill
        student = copy.deepcopy(pruned)
        evaluator.finetune(student, epochs=1, steps=config.finetune.steps, lr=0.01, seed=3)
        return _params(student)

    plain = finetuned(False)
    distilled = finetuned(True)
    _ = finetuned(False)  # a fine-tune in between changes nothing for the next one
    again = finetuned(True)
    assert not _same(plain, distilled)
    assert _same(distilled, again)
    assert _same(teacher_weights, _params(teacher))  # the teacher is never trained
    assert not teacher.training


def test_distillation_without_a_teacher_is_refused():
    config = config_from_dict(tiny_config(Path("unused"), finetune={"distill": {}}))
    with pytest.raises(ValueError, match="teacher"):
        build_evaluator(config, train_loader=[], val_loader=[], metric=accuracy, runtime=CPU)


# --- bf16 -------------------------------------------------------------------------------------------------------


def test_bf16_autocast_on_the_cpu_fine_tunes_and_scores_finitely():
    loader = _loader()
    model = _small_net()
    before = _params(model)
    dtypes: list[torch.dtype] = []
    model.fc.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    evaluator = Evaluator(train_loader=loader, val_loader=loader, runtime=Runtime("cpu", "bf16"))
    assert evaluator.recalibrate(model, 2, seed=0) == 2
    loss = evaluator.finetune(model, epochs=1, steps=3, lr=0.01, seed=0)
    score = evaluator.score(model)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast ran recalibration, fine-tune and scoring
    assert len(dtypes) == 2 + 3 + len(loader)
    assert torch.isfinite(torch.tensor(loss)) and 0.0 <= score <= 1.0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    assert not _same(before, _params(model))


# --- the validation subset ----------------------------------------------------------------------------------------


def test_val_batches_scores_the_same_first_batches_every_time():
    seen: list[list[int]] = []

    def first_labels(_model: nn.Module, loader) -> float:
        seen.append([int(y[0]) for _, y in loader])
        return float(len(seen[-1]))

    val = _loader(n=80)  # 5 batches, shuffled: the subset is read in dataset order
    evaluator = Evaluator(train_loader=val, val_loader=val, metric=first_labels, val_batches=2)
    model = _small_net()
    assert evaluator.score(model) == 2.0
    assert evaluator.score(model) == 2.0
    assert seen[0] == seen[1] == [int(val.dataset[0][1]), int(val.dataset[16][1])]
    assert evaluator.score(model, val) == 5.0  # export passes its loader: the whole split


# --- user losses on dict batches --------------------------------------------------------------------------------


class DictNet(nn.Module):
    """A model taking a dict batch (as Hugging Face models take keyword inputs) and returning a dict."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.body(x).flatten(1))}


def _dict_batches(n: int = 48) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(16, 1, 16, 16, generator=g), "y": torch.randint(0, 10, (16,), generator=g)} for _ in range(n // 16)]


def test_a_user_loss_trains_on_dict_batches_with_distillation(tmp_path, monkeypatch):
    (tmp_path / "dict_loss_mod.py").write_text(
        textwrap.dedent(
            """
            import torch.nn.functional as F

            CALLS = []

            def loss(model, batch, smoothing=0.0):
                CALLS.append(sorted(batch))
                out = model(x=batch["x"])
                return F.cross_entropy(out["logits"], batch["y"], label_smoothing=smoothing)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_from_dict(
        tiny_config(
            tmp_path / "run",
            finetune={"loss": "dict_loss_mod:loss", "loss_options": {"smoothing": 0.1}, "distill": {"weight": 0.5}},
        )
    )
    batches = _dict_batches()

    def dict_accuracy(model: nn.Module, loader) -> float:
        hits = [(model(x=b["x"])["logits"].argmax(1) == b["y"]).float().mean() for b in loader]
        return float(torch.stack(hits).mean())

    teacher = DictNet().eval()
    model = DictNet()
    before = _params(model)
    evaluator = build_evaluator(
        config, train_loader=batches, val_loader=batches, metric=dict_accuracy, runtime=CPU, teacher=teacher
    )
    assert evaluator.recalibrate(model, 2, seed=0) == 2
    evaluator.finetune(model, epochs=1, steps=4, lr=0.05, seed=0)
    score = evaluator.score(model)
    import dict_loss_mod

    assert dict_loss_mod.CALLS[-1] == ["x", "y"] and len(dict_loss_mod.CALLS) == 2 + 4
    assert 0.0 <= score <= 1.0
    assert not _same(before, _params(model))


def test_a_registered_loss_on_dict_batches_says_to_use_a_loss_function():
    evaluator = Evaluator(train_loader=_dict_batches(), val_loader=_dict_batches())
    with pytest.raises(ConfigError, match="pkg.module:fn") as err:
        evaluator.finetune(DictNet(), epochs=1, steps=1, lr=0.01, seed=0)
    assert err.value.key == "finetune.loss"


def test_label_smoothing_is_a_registered_loss_with_its_option():
    config = config_from_dict(tiny_config(Path("unused"), finetune={"loss": "label_smoothing", "loss_options": {"smoothing": 0.2}}))
    evaluator = build_evaluator(config, train_loader=[], val_loader=[], metric=accuracy, runtime=CPU)
    criterion = evaluator.step_loss.criterion  # type: ignore[attr-defined]
    assert isinstance(criterion, nn.CrossEntropyLoss) and criterion.label_smoothing == 0.2


# --- a user evaluator ---------------------------------------------------------------------------------------------

COUNTING_EVALUATOR = """
from autoprune.evaluate import Evaluator

CALLS = {"factory": 0, "recalibrate": 0, "finetune": 0, "score": 0}
SEEN = {}


class Counting:
    def __init__(self, inner):
        self.inner = inner

    def recalibrate(self, model, batches, seed):
        CALLS["recalibrate"] += 1
        return self.inner.recalibrate(model, batches, seed)

    def finetune(self, model, *, epochs, steps, lr, seed, on_epoch=None):
        CALLS["finetune"] += 1
        SEEN["steps"] = steps
        return self.inner.finetune(model, epochs=epochs, steps=steps, lr=lr, seed=seed, on_epoch=on_epoch)

    def score(self, model, loader=None):
        CALLS["score"] += 1
        return self.inner.score(model, loader)


def make(train_loader, val_loader, metric, tag):
    CALLS["factory"] += 1
    SEEN["tag"] = tag
    return Counting(Evaluator(train_loader=train_loader, val_loader=val_loader, metric=metric))


class NoScore:
    def recalibrate(self, model, batches, seed):
        return 0

    def finetune(self, model, **budget):
        return 0.0


def no_score(train_loader, val_loader, metric):
    return NoScore()


def broken(train_loader, val_loader, metric):
    raise RuntimeError("no GPU here,\\n try again")
"""


def _counting_module(tmp_path: Path, name: str):
    (tmp_path / f"{name}.py").write_text(COUNTING_EVALUATOR)
    return name


def test_load_user_evaluator_calls_the_factory_with_loaders_metric_and_options(tmp_path):
    name = _counting_module(tmp_path, "counting_eval_direct")
    loader = _loader()
    evaluator = load_user_evaluator(
        f"{name}:make", {"tag": "t1"}, train_loader=loader, val_loader=loader, metric=accuracy, search_paths=[tmp_path]
    )
    module = sys.modules[name]
    evaluator.finetune(_small_net(), epochs=1, steps=2, lr=0.01, seed=0)  # type: ignore[attr-defined]
    assert module.CALLS["factory"] == 1 and module.CALLS["finetune"] == 1
    assert module.SEEN == {"tag": "t1", "steps": 2}


def test_a_user_evaluator_from_config_is_called_for_every_trial(tmp_path, base_weights):
    name = _counting_module(tmp_path, "counting_eval_config")
    config_dict = tiny_config(
        tmp_path / "run",
        base_weights,
        evaluator=f"{name}:make",
        evaluator_options={"tag": "from-config"},
        finetune={"steps": 2},
        study={"n_trials": 3, "sampler": "random", "seed": 0},
        prune={"search_space": "uniform"},
    )
    # the config's folder is on the factory's import path
    config = load_config(write_config(tmp_path / "config.yaml", config_dict))
    study = autoprune.search(config)
    module = sys.modules[name]
    trials = [t for t in study.trials if t.values is not None]
    assert len(trials) == 3
    assert module.CALLS["factory"] >= 1 and module.SEEN == {"tag": "from-config", "steps": 2}
    assert module.CALLS["recalibrate"] == 3 and module.CALLS["finetune"] == 3
    assert module.CALLS["score"] >= 2 * 3  # before and after each fine-tune


def test_search_takes_an_evaluator_object_from_python(tmp_path, base_weights, digits_data):
    calls = {"recalibrate": 0, "finetune": 0, "score": 0}
    inner = Evaluator(train_loader=digits_data.train, val_loader=digits_data.val)

    class Counting:
        def recalibrate(self, model, batches, seed):
            calls["recalibrate"] += 1
            return inner.recalibrate(model, batches, seed)

        def finetune(self, model, *, epochs, steps, lr, seed, on_epoch=None):
            calls["finetune"] += 1
            return inner.finetune(model, epochs=epochs, steps=steps, lr=lr, seed=seed, on_epoch=on_epoch)

        def score(self, model, loader=None):
            calls["score"] += 1
            return inner.score(model, loader)

    config = config_from_dict(
        tiny_config(tmp_path / "run", base_weights, finetune={"steps": 1}, study={"n_trials": 2, "sampler": "random"},
                    prune={"search_space": "uniform"})
    )
    study = autoprune.search(config, evaluator=Counting())
    assert len([t for t in study.trials if t.values is not None]) == 2
    assert calls["recalibrate"] == 2 and calls["finetune"] == 2 and calls["score"] >= 4


# --- one-line errors naming the key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finetune", "key", "words"),
    [
        ({"loss": ":fn"}, "finetune.loss", "pkg.module:fn"),
        ({"steps": 0}, "finetune.steps", "greater than or equal to 1"),
        ({"optimizer": "adam"}, "finetune.optimizer", "sgd"),
        ({"distill": {"weight": 1.5}}, "finetune.distill.weight", "less than or equal to 1"),
        ({"distill": {"temperature": 0}}, "finetune.distill.temperature", "greater than 0"),
        ({"val_batches": 0}, "finetune.val_batches", "greater than or equal to 1"),
    ],
)
def test_bad_recipe_keys_are_one_line_errors_naming_the_key(finetune, key, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(Path("unused"), finetune=finetune))
    assert err.value.key == key
    assert words in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_loss_is_one_line_naming_the_key_when_the_run_is_resolved():
    # The config checks a loss's form; the registry (beside the training loop) is asked when the run is resolved.
    for section, key in (("finetune", "finetune.loss"), ("export", "export.loss")):
        config = config_from_dict(tiny_config(Path("unused"), **{section: {"loss": "cross_entropi"}}))
        with pytest.raises(ConfigError) as err:
            check_registered_names(config)
        assert err.value.key == key
        assert "did you mean 'cross_entropy'" in str(err.value) and "\n" not in str(err.value)


def test_recipe_keys_beside_a_user_evaluator_are_refused():
    with pytest.raises(ConfigError, match="finetune.distill configures the built-in evaluator"):
        config_from_dict(tiny_config(Path("unused"), evaluator="m:make", finetune={"distill": {}}))
    with pytest.raises(ConfigError, match="evaluator_options needs evaluator"):
        config_from_dict(tiny_config(Path("unused"), evaluator_options={"a": 1}))


def test_bad_evaluators_are_one_line_errors_naming_evaluator(tmp_path):
    name = _counting_module(tmp_path, "counting_eval_errors")
    kwargs = {"train_loader": [], "val_loader": [], "metric": accuracy, "search_paths": [tmp_path]}
    cases = [
        (f"{name}_missing:make", {}, "evaluator", "cannot import module"),
        (f"{name}:nothing", {}, "evaluator", "has no attribute 'nothing'"),
        (f"{name}:no_score", {}, "evaluator", "has no score"),
        (f"{name}:broken", {}, "evaluator", "RuntimeError: no GPU here, try again"),
        (f"{name}:make", {"colour": 1}, "evaluator_options", "takes: tag"),
    ]
    for spec, options, key, words in cases:
        with pytest.raises(ConfigError) as err:
            load_user_evaluator(spec, options, **kwargs)
        assert err.value.key == key and words in str(err.value) and "\n" not in str(err.value), (spec, str(err.value))
    with pytest.raises(ConfigError, match="has no recalibrate, finetune, score"):
        check_evaluator(object())


# --- export's recovery recipe -------------------------------------------------------------------------------------


def test_export_recovery_distills_from_the_base_with_its_own_steps(tmp_path, base_weights):
    from autoprune.export._recover import recover, recovery_evaluator
    from autoprune.study import prepare_task

    config = config_from_dict(
        tiny_config(
            tmp_path / "run",
            base_weights,
            finetune={"steps": 2},
            export={"steps": 3, "distill": {"weight": 0.5, "temperature": 2.0}, "optimizer": "adamw"},
        )
    )
    task = prepare_task(config)
    recovery = recovery_evaluator(task)
    assert isinstance(recovery, Evaluator) and recovery.teacher is task.base.model
    assert recovery.optimizer == "adamw" and task.evaluator.optimizer == "sgd"  # type: ignore[attr-defined]
    plan = PruningPlan.uniform(task.base.groups, 0.5, "l1")
    optimizers: list[type] = []
    handle = register_optimizer_step_post_hook(lambda opt, _a, _k: optimizers.append(type(opt)))
    try:
        recovered = recover(task, plan, 0, eval_loader=task.data.val, split="val")
    finally:
        handle.remove()
    # the search's fine-tune re-created (2 SGD steps), then export's recovery (3 AdamW steps, distilled)
    assert optimizers == [torch.optim.SGD] * 2 + [torch.optim.AdamW] * 3
    assert 0.0 <= recovered.metrics["recovered"] <= 1.0


def test_benchmark_distill_runs_on_a_tiny_budget(tmp_path, base_weights):
    import subprocess

    from conftest import REPO

    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", base_weights))
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "experiments/benchmark_distill.py", str(config), "--seeds", "0", "1",
         "--steps", "2", "--ratios", "0.5", "0.8", "--criteria", "l1", "--distill", "0.5:4", "--out", str(tmp_path / "b")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| plain") or line.startswith("| distill")]
    assert len(rows) == 2 and all(row.count("±") == 3 for row in rows), done.stdout
    assert (tmp_path / "b" / "results.json").exists()


@pytest.mark.parametrize(
    ("export", "smoothing"), [({}, 0.2), ({"loss": "cross_entropy"}, 0.0), ({"loss_options": {"smoothing": 0.3}}, 0.3)]
)
def test_export_takes_finetunes_loss_unless_it_sets_its_own(export, smoothing):
    finetune = {"loss": "label_smoothing", "loss_options": {"smoothing": 0.2}}
    config = config_from_dict(tiny_config(Path("unused"), finetune=finetune, export=export))
    evaluator = build_evaluator(config, train_loader=[], val_loader=[], metric=accuracy, runtime=CPU, section="export")
    assert evaluator.step_loss.criterion.label_smoothing == smoothing  # type: ignore[attr-defined]

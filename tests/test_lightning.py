"""The Lightning evaluator, driven by the real ``lightning`` package (installed by ``make test``)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, run_cli, tiny_config, write_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autoprune
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.evaluate import LightningEvaluator, lightning_evaluator

# `make test` installs the extra; this skip only says why when a local venv lacks it.
pytest.importorskip("lightning", reason="the lightning extra is not installed: pip install 'autoprune[lightning]'")

# A user's file: the LightningModule holds the model it is given, logs val_acc, and reads self.hparams.lr.
USER_MODULE = '''
from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from autoprune.evaluate import LightningEvaluator

CALLS = {"module": 0, "factory": 0, "steps": 0}


class LitClassifier(L.LightningModule):
    def __init__(self, model: nn.Module, lr: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.steps = 0
        CALLS["module"] += 1

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        self.steps += 1
        CALLS["steps"] += 1
        inputs, targets = batch
        return F.cross_entropy(self.model(inputs), targets)

    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        logits = self.model(inputs)
        self.log("val_acc", (logits.argmax(1) == targets).float().mean())
        self.log("val_loss", F.cross_entropy(logits, targets))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def make_evaluator(train_loader, val_loader, metric, **options):
    CALLS["factory"] += 1
    return LightningEvaluator(LitClassifier, train_loader, val_loader, **options)
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "litmod.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("litmod")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("litmod", None)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _loaders(samples: int = 96, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 4, (samples,), generator=g)
    inputs = torch.randn(samples, 1, 6, 6, generator=g) + targets.view(-1, 1, 1, 1).float()  # learnable
    data = TensorDataset(inputs, targets)
    train = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(1))
    return train, DataLoader(data, batch_size=32)


def _model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def test_finetune_trains_the_given_model_in_place_for_exactly_steps_optimizer_steps(user_module):
    train, val = _loaders()  # 6 batches an epoch: 8 steps cross an epoch boundary
    made: list = []

    def factory(model):
        made.append(user_module.LitClassifier(model))
        return made[-1]

    evaluator = LightningEvaluator(factory, train, val)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses: list[tuple[int, float]] = []
    loss = evaluator.finetune(model, epochs=5, steps=8, lr=0.05, seed=0, on_epoch=lambda e, v: losses.append((e, v)))
    assert made[-1].model is model
    assert made[-1].steps == 8  # steps overrides epochs: 8 optimizer steps, not 5 epochs of 6
    assert made[-1].hparams.lr == 0.05
    changed = [k for k, v in model.state_dict().items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert sorted(changed) == ["bn.weight", "conv.weight", "fc.weight"]
    assert [e for e, _ in losses] == [1, 2] and loss == losses[-1][1]
    assert not model.training  # left in eval mode, as the built-in fine-tune leaves it

    evaluator.finetune(model, epochs=2, steps=None, lr=0.05, seed=0)
    assert made[-1].steps == 12  # whole epochs when no steps budget


def test_the_same_seed_gives_the_same_fine_tuned_weights_and_another_seed_does_not(user_module):
    train, val = _loaders()
    evaluator = LightningEvaluator(user_module.LitClassifier, train, val)
    runs = []
    for seed in (3, 3, 4):
        model = _model()
        evaluator.finetune(model, epochs=1, steps=4, lr=0.05, seed=seed)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_the_fine_tune_learning_rate_reaches_the_module(user_module):
    train, val = _loaders()
    evaluator = LightningEvaluator(user_module.LitClassifier, train, val)
    model = _model()
    before = model.fc.weight.detach().clone()
    evaluator.finetune(model, epochs=1, steps=3, lr=0.0, seed=0)
    assert torch.equal(model.fc.weight, before)  # lr 0 set on hparams.lr: nothing moves


def test_score_returns_the_logged_metric_and_can_use_another_key_or_loader(user_module):
    train, val = _loaders()
    model = _model()
    inputs, targets = val.dataset.tensors
    with torch.no_grad():
        model.eval()
        expected = (model(inputs).argmax(1) == targets).float().mean().item()
    evaluator = LightningEvaluator(user_module.LitClassifier, train, val)
    assert evaluator.score(model) == pytest.approx(expected, abs=1e-6)
    loss = LightningEvaluator(user_module.LitClassifier, train, val, metric_key="val_loss").score(model)
    with torch.no_grad():
        assert loss == pytest.approx(nn.functional.cross_entropy(model(inputs), targets).item(), rel=1e-5)
    half = DataLoader(TensorDataset(inputs[:32], targets[:32]), batch_size=32)
    with torch.no_grad():
        expected_half = (model(inputs[:32]).argmax(1) == targets[:32]).float().mean().item()
    assert evaluator.score(model, half) == pytest.approx(expected_half, abs=1e-6)
    assert not model.training


def test_limit_val_batches_bounds_the_search_score_but_not_a_loader_given_by_export(user_module):
    train, val = _loaders()  # 96 validation samples in 3 batches of 32
    inputs, targets = val.dataset.tensors
    model = _model().eval()
    with torch.no_grad():
        correct = model(inputs).argmax(1) == targets
    bounded = LightningEvaluator(user_module.LitClassifier, train, val, trainer_options={"limit_val_batches": 1})
    assert bounded.score(model) == pytest.approx(correct[:32].float().mean().item(), abs=1e-6)
    assert bounded.score(model, val) == pytest.approx(correct.float().mean().item(), abs=1e-6)


def test_a_missing_metric_key_is_one_line_naming_it_and_the_logged_keys(user_module):
    train, val = _loaders()
    evaluator = LightningEvaluator(user_module.LitClassifier, train, val, metric_key="val_f1")
    with pytest.raises(ConfigError) as err:
        evaluator.score(_model())
    message = str(err.value)
    assert "\n" not in message
    assert "'val_f1'" in message and "val_acc, val_loss" in message


def test_a_module_factory_that_copies_the_model_is_refused(user_module):
    import copy

    train, val = _loaders()
    evaluator = LightningEvaluator(lambda m: user_module.LitClassifier(copy.deepcopy(m)), train, val)
    with pytest.raises(ValueError, match="does not hold the model it was given"):
        evaluator.finetune(_model(), epochs=1, steps=1, lr=0.05, seed=0)


def test_trainer_options_cannot_set_the_budget_or_the_device(user_module):
    train, val = _loaders()
    with pytest.raises(ValueError, match=r"\['devices', 'max_epochs'\]"):
        LightningEvaluator(user_module.LitClassifier, train, val, trainer_options={"max_epochs": 3, "devices": 2})


def test_recalibrate_reestimates_batchnorm_on_training_batches_of_any_shape(user_module):
    train, val = _loaders()
    model = _model()
    evaluator = LightningEvaluator(user_module.LitClassifier, train, val)
    assert evaluator.recalibrate(model, batches=3, seed=0) == 3
    assert int(model.bn.num_batches_tracked) == 3 and not torch.equal(model.bn.running_mean, torch.zeros(8))
    first = model.bn.running_mean.clone()
    evaluator.recalibrate(model, batches=3, seed=0)
    assert torch.equal(model.bn.running_mean, first)  # the same seeded batches

    dict_train = [{"x": inputs, "y": targets} for inputs, targets in train]
    seen: list[str] = []

    def forward_batch(m, batch):
        seen.append(",".join(sorted(batch)))
        return m(batch["x"])

    other = LightningEvaluator(user_module.LitClassifier, dict_train, val, forward_batch=forward_batch)
    assert other.recalibrate(model, batches=2, seed=0) == 2
    assert seen == ["x,y", "x,y"]


def test_config_side_factory_builds_the_users_module_from_options(user_module):
    train, val = _loaders()
    evaluator = lightning_evaluator(
        train, val, None, module="litmod:LitClassifier", module_options={"lr": 0.01}, metric_key="val_loss"
    )
    model = _model()
    assert evaluator.score(model) > 0
    before = user_module.CALLS["module"]
    evaluator.finetune(model, epochs=1, steps=1, lr=0.02, seed=0)
    assert user_module.CALLS["module"] == before + 1
    with pytest.raises(ConfigError, match="evaluator_options.module"):
        lightning_evaluator(train, val, None, module="litmod:NoSuchModule")


def test_a_search_runs_its_trials_through_a_lightning_evaluator_from_config(tmp_path, user_module):
    config = _search_config(tmp_path / "run", evaluator_options={"metric_key": "val_acc"})
    modules, factories, steps = (user_module.CALLS[k] for k in ("module", "factory", "steps"))
    study = autoprune.search(config_from_dict(config))
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    assert user_module.CALLS["factory"] > factories
    # per trial: a module for the score before, the fine-tune and the score after
    assert user_module.CALLS["module"] - modules >= 3 * len(trials)
    assert user_module.CALLS["steps"] - steps == 2 * len(trials)  # finetune.steps: 2 training_steps per trial
    assert all(0.0 <= t.values[0] <= 1.0 for t in trials)


def _search_config(output, **sections):
    config = tiny_config(
        output,
        model={"factory": "user_models:small_net", "builtin": None, "input_shape": [1, 16, 16]},
        data={"builtin": "digits", "batch_size": 256, "val_fraction": 0.2},
        base_training={"epochs": 1, "lr": 0.05},
        finetune={"epochs": 1, "steps": 2, "lr": 0.01, "bn_recalibration_batches": 1},
        study={"sampler": "random", "n_trials": 2, "seed": 0},
        prune={"ignore": ["fc"], "search_space": "per_layer", "ratio": [0.0, 0.5], "criteria": ["l1"]},
        evaluator="litmod:make_evaluator",
        **sections,
    )
    config.pop("objectives", None)
    return config


def test_a_metric_key_the_module_does_not_log_stops_the_cli_in_one_line_before_any_trial(tmp_path):
    (tmp_path / "litmod.py").write_text(USER_MODULE)  # beside the config: on the factories' import path
    (tmp_path / "user_models.py").write_text((REPO / "tests" / "user_models.py").read_text())
    config = _search_config(tmp_path / "run", evaluator_options={"metric_key": "val_f1"})
    path = write_config(tmp_path / "config.yaml", config)
    result = run_cli("search", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "evaluator_options.metric_key" in errors[0] and "'val_f1'" in errors[0] and "val_acc, val_loss" in errors[0]
    assert not (tmp_path / "run").exists()


def test_without_the_extra_the_evaluator_is_one_line_saying_what_to_install(tmp_path):
    # A process where `lightning` cannot be imported: importing autoprune.evaluate still works, building fails.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["lightning"] = None
        sys.modules["lightning.pytorch"] = None
        sys.modules["pytorch_lightning"] = None
        from autoprune.evaluate import LightningEvaluator
        try:
            LightningEvaluator(lambda m: m, [], [])
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().count("\n") == 0
    assert "pip install 'autoprune[lightning]'" in out.stdout and out.stdout.startswith("ConfigError")


def test_importing_autoprune_evaluate_does_not_import_lightning():
    code = "import sys, autoprune.evaluate; print(any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_a_non_finite_training_loss_fails_the_fine_tune(user_module):
    class Diverging(user_module.LitClassifier):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * float("nan")

    train, val = _loaders()
    model = _model()
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        LightningEvaluator(Diverging, train, val).finetune(model, epochs=1, steps=2, lr=0.05, seed=0)
    assert not any(p.isnan().any() for p in model.parameters())  # stopped before the optimizer stepped on it


def test_a_module_without_an_lr_warns_that_finetune_lr_is_not_used(user_module):
    class FixedLr(user_module.LitClassifier):
        def __init__(self, model):
            super().__init__(model)
            del self.hparams["lr"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    train, val = _loaders()
    model = _model()
    before = model.fc.weight.detach().clone()
    evaluator = LightningEvaluator(FixedLr, train, val)
    with pytest.warns(UserWarning, match="finetune.lr is not used"):
        evaluator.finetune(model, epochs=1, steps=1, lr=0.5, seed=0)
    assert torch.equal(model.fc.weight, before)  # its own lr 0, not 0.5
    with pytest.raises(ValueError, match="'base_lr'"):
        LightningEvaluator(FixedLr, train, val, lr_attribute="base_lr").finetune(model, epochs=1, steps=1, lr=0.5, seed=0)

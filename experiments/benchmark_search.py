"""Search quality at equal compute: autoprune's search against the baselines a Torch-Pruning user runs by hand.

    OMP_NUM_THREADS=1 python experiments/benchmark_search.py experiments/digits_jitter/config.yaml --seeds 0 \
        --ratios 0.5 0.7 0.8 0.9 --global-targets 0.25 0.1 0.05 0.02 --finetune-steps 108 \
        --search staged:global_rank:tpe single:global_offset:tpe --out runs/bench18/jitter-s0

On one task, with the same base weights and the same recalibrate + fine-tune recipe for every candidate that
reaches a front (``autoprune.study.evaluate_plan``, what every trial runs), it compares arms that spend the same
compute, counted in optimizer steps and forward batches:

1. ``baselines``: the union of the uniform sweeps (``--criteria`` x ``--ratios``) and of global ranking
   (``--global-criteria`` x ``--global-targets`` relative MACs), every point fine-tuned with the final recipe.
   Each part is also shown alone (kind ``part``) at its own, smaller compute.
2. one arm per ``--search`` entry: ``single:PRESET:SAMPLER``, a single-stage search with as many trials as the
   baselines have points (so exactly their compute); ``staged:PRESET:SAMPLER[:RUNGS]``, the staged search
   (screen, fine-tune finalists per MACs band, promote) with the baselines' budget in batches (``--bands N``
   sets its bands); ``default``, the config's own search. PRESET is a preset name or a preset YAML file.
3. ``--random``: random search over ``per_layer`` at the same compute.

``--budget N`` skips the baselines and gives every arm the compute of N baseline candidates (a variant's run,
merged with ``combine`` beside the full run).

Every seed is an independent replicate: its own validation split, base model and sampler seed. It prints and
writes ``summary.md`` / ``summary.csv`` (mean ± standard error over seeds), ``results.json`` (every point) and
``fronts.png`` (left: each arm's front for the first seed; right: the mean best metric under each MACs budget,
± standard error), then the issue's targets for every search arm against the baselines. Hypervolume is given on
the linear MACs axis and on a log-MACs axis (log10 of the relative MACs from 1% to 100%, so the low end counts).
Seeds run in separate processes are merged with ``benchmark_search.py combine DIR [DIR ...] --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _bench_report module, when run as a script
from _bench_report import Run, write_summary  # noqa: E402

from autoprune.config import Config, load_config  # noqa: E402
from autoprune.engine import global_ranking_plan, importance_table, relative_macs  # noqa: E402
from autoprune.errors import AutopruneError  # noqa: E402
from autoprune.plan import PruningPlan  # noqa: E402
from autoprune.space import load_space_spec  # noqa: E402
from autoprune.study import (  # noqa: E402
    Objective,
    Task,
    enqueue_warm_start,
    evaluate_plan,
    is_final,
    make_sampler,
    plan_schedule,
    prepare_task,
    run_staged,
    staged_spend,
    trial_seed,
    unit_costs,
)

RATIOS = (0.3, 0.5, 0.7, 0.78, 0.85)
GLOBAL_TARGETS = (0.5, 0.25, 0.1, 0.05, 0.025)
SWEEP_CRITERIA = ("l1", "l2", "fpgm")
GLOBAL_CRITERIA = ("l1", "l2")
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one fine-tuned candidate costs (the staged search's unit costs): its optimizer steps, and its forward
    batches (BatchNorm recalibration, then scoring before and after the fine-tune)."""

    steps: int
    forward_batches: int

    @classmethod
    def of(cls, task: Task) -> Recipe:
        one = unit_costs(task).standard()
        return cls(one.train_steps, one.forward_batches)


def candidate_runs(task: Task, method: str, kind: str, plans: Sequence[PruningPlan], seed: int, recipe: Recipe) -> Run:
    """Each plan through the trial recipe, seeded as trial ``index`` of a study seeded ``seed``."""
    started, points = time.perf_counter(), []
    for index, plan in enumerate(plans):
        result = evaluate_plan(task, plan, seed=trial_seed(seed, index))
        points.append((result.metric, result.cost))
    n = len(plans)
    return Run(method, kind, seed, points, n * recipe.steps, n * recipe.forward_batches, time.perf_counter() - started)


def global_plans(task: Task, criterion: str, targets: Sequence[float], log: Log) -> list[PruningPlan]:
    """Global ranking's plans (one threshold over per-group normalised importances, Torch-Pruning's global
    pruning) at each relative-MACs target; a target out of reach is skipped, and said."""
    prune = task.config.prune
    plans = []
    for target in targets:
        try:
            plans.append(global_ranking_plan(
                task.base.model, task.base.example_inputs, macs=target, criterion=criterion, scope=prune.scopes[0],
                groups=task.base.groups, round_to=prune.channel_multiple, gradient_batches=task.gradient_batches or None,
            ))
        except AutopruneError as exc:
            log(f"  global-{criterion} at MACs {target:g}: skipped ({exc})".splitlines()[0])
    return plans


def baseline_runs(task: Task, args: argparse.Namespace, seed: int, recipe: Recipe, log: Log) -> list[Run]:
    """Each sweep and each global ranking alone (kind ``part``), then their union (kind ``baseline``)."""
    prune = task.config.prune
    parts = []
    for criterion in args.criteria:
        plans = [PruningPlan.uniform(task.base.groups, r, criterion, round_to=prune.channel_multiple, scope=prune.scopes[0])
                 for r in args.ratios]
        parts.append(candidate_runs(task, f"sweep-{criterion}", "part", plans, seed, recipe))
        log(parts[-1].line())
    for criterion in args.global_criteria:
        plans = global_plans(task, criterion, args.global_targets, log)
        parts.append(candidate_runs(task, f"global-{criterion}", "part", plans, seed, recipe))
        log(parts[-1].line())
    union = Run(
        "baselines", "baseline", seed, [p for r in parts for p in r.points], sum(r.steps for r in parts),
        sum(r.forward_batches for r in parts), sum(r.seconds for r in parts),
    )
    log(union.line())
    return [*parts, union]


def _arm_task(task: Task, preset: str, *, warm_start: bool = True, **study: object) -> Task:
    """``task`` with another search space preset and study settings (the base model and data shared)."""
    spec = load_space_spec(preset)
    if not warm_start:
        spec = spec.model_copy(update={"warm_start": False})
    config = task.config.model_copy(update={"study": task.config.study.model_copy(update=study)})
    ranking: dict[str, object] = {}
    if spec.ratio_schedule == "global_rank" and not task.space.importances:
        # What prepare_task computes when the config's own preset ranks globally: importances on the base model.
        prune, batches = config.prune, task.gradient_batches or None
        ranking["importances"] = importance_table(task.base.model, task.base.example_inputs, task.base.groups, prune.criteria,
                                                  prune.scopes, normalizer=spec.normalizer, gradient_batches=batches)
        if spec.target == "macs":
            ranking["macs_of"] = relative_macs(task.base.model, task.base.example_inputs, task.base.counts,
                                               gradient_batches=batches)
    space = dataclasses.replace(task.space, spec=spec, **ranking)  # type: ignore[arg-type]
    return dataclasses.replace(task, config=config, space=space)


def study_run(task: Task, method: str, preset: str, sampler: str, trials: int, seed: int, recipe: Recipe,
              *, warm_start: bool = True) -> Run:
    """``trials`` trials of an in-memory single-stage study with ``preset`` and ``sampler``."""
    local = _arm_task(task, preset, warm_start=warm_start)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed))
    enqueue_warm_start(study, local)
    started = time.perf_counter()
    study.optimize(Objective(local), n_trials=trials, gc_after_trial=False)
    done = [t for t in study.trials if t.values is not None]
    points = [(t.values[0], t.values[1]) for t in done]
    kind = "random" if sampler == "random" and not warm_start else "search"
    return Run(method, kind, seed, points, len(done) * recipe.steps, len(done) * recipe.forward_batches,
               time.perf_counter() - started)


def staged_run(task: Task, method: str, preset: str, sampler: str, budget: int, seed: int, log: Log,
               **stages: object) -> Run:
    """The staged search (screen, fine-tune the best of each band, promote) in an in-memory study, with
    ``budget`` batches (optimizer steps + forward batches); only its fine-tuned trials make its front."""
    settings = task.config.study.stages.model_copy(update={"budget": budget, **stages})
    local = _arm_task(task, preset, search="staged", stages=settings, sampler=sampler)
    schedule = plan_schedule(budget, unit_costs(local), settings, local.config)
    log(f"  {method}: {schedule.describe()}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed))
    enqueue_warm_start(study, local)
    started = time.perf_counter()
    run_staged(study, storage, local, schedule, catch=(Exception,))
    spent = staged_spend(study)
    final = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if is_final(t)]
    points = [(t.values[0], t.values[1]) for t in final]
    return Run(method, "search", seed, points, spent.train_steps, spent.forward_batches, time.perf_counter() - started)


def _arm(entry: str, config: Config) -> tuple[str, str, str, int]:
    """``MODE:PRESET:SAMPLER[:RUNGS]`` (``default`` for the config's own), as (mode, preset, sampler, rungs)."""
    own = [config.study.search, str(config.prune.search_space), config.study.sampler, "0"]
    given = [] if entry == "default" else entry.split(":")
    if given and given[0] not in ("single", "staged"):
        raise SystemExit(f"--search {entry!r}: expected default or single|staged:PRESET:SAMPLER[:RUNGS]")
    mode, preset, sampler, rungs = [*given, *own[len(given):]][:4]
    return mode, preset, sampler, int(rungs)


def seed_config(config: Config, seed: int, out: Path, args: argparse.Namespace) -> Config:
    finetune = config.finetune
    if args.finetune_epochs is not None:
        finetune = finetune.model_copy(update={"epochs": args.finetune_epochs, "steps": None})
    if args.finetune_steps is not None:
        finetune = finetune.model_copy(update={"steps": args.finetune_steps})
    study = config.study.model_copy(update={"seed": seed})
    return config.model_copy(update={"study": study, "finetune": finetune, "output": out / f"seed{seed}"})


def run_seed(config: Config, args: argparse.Namespace, seed: int, log: Log) -> tuple[Task, list[Run]]:
    task = prepare_task(seed_config(config, seed, args.out, args), log)
    recipe = Recipe.of(task)
    log(f"seed {seed}: base {config.metric} {task.base.metric:.4f}, {len(task.base.groups)} groups; a candidate costs "
        f"{recipe.steps} steps + {recipe.forward_batches} forward batches")
    if args.budget is None:
        runs = baseline_runs(task, args, seed, recipe, log)
        union = runs[-1]
    else:  # a variant's run: the search arms alone, at the compute of --budget baseline candidates
        runs, union = [], Run("baselines", "baseline", seed, [], args.budget * recipe.steps,
                              args.budget * recipe.forward_batches, 0.0)
    trials = args.budget or len(union.points)
    if args.random:
        runs.append(study_run(task, "random-per_layer", "per_layer", "random", trials, seed, recipe, warm_start=False))
        log(runs[-1].line())
    for entry in args.search:
        mode, preset, sampler, rungs = _arm(entry, config)
        bands = f"-b{args.bands}" if mode == "staged" and args.bands is not None else ""
        method = f"{mode}-{Path(preset).stem}-{sampler}{f'-r{rungs}' if rungs else ''}{bands}{args.tag}"
        if mode == "staged":
            promote = config.study.stages.promote.model_copy(update={"rungs": rungs}) if rungs else None
            extra: dict[str, object] = {"promote": promote} if promote is not None else {}
            if args.bands is not None:
                extra["bands"] = config.study.stages.bands.model_copy(update={"count": args.bands})
            runs.append(staged_run(task, method, preset, sampler, union.steps + union.forward_batches, seed, log, **extra))
        else:
            runs.append(study_run(task, method, preset, sampler, trials, seed, recipe))
        log(runs[-1].line())
    return task, runs


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench-<config name>")
    parser.add_argument("--criteria", nargs="*", default=list(SWEEP_CRITERIA), help="one uniform sweep each")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="the uniform sweeps' ratios")
    parser.add_argument("--global-criteria", nargs="*", default=list(GLOBAL_CRITERIA), help="one global ranking each")
    parser.add_argument("--global-targets", type=float, nargs="+", default=list(GLOBAL_TARGETS),
                        help="global ranking's relative-MACs targets")
    parser.add_argument("--search", nargs="*", default=["default"],
                        help="search arms: 'default' (the config's search) or single|staged:PRESET:SAMPLER[:RUNGS]")
    parser.add_argument("--budget", type=int, default=None,
                        help="skip the baselines; every arm gets the compute of this many baseline candidates")
    parser.add_argument("--bands", type=int, default=None, help="staged arms: this many MACs bands (study.stages.bands.count)")
    parser.add_argument("--random", action="store_true", help="add random search over per_layer")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override finetune.epochs (every arm)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override finetune.steps (every arm)")
    parser.add_argument("--tag", default="", help="a suffix for the search arms' names (a variant's run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    args = parser.parse_args(argv)
    if args.budget is None and not args.criteria and not args.global_criteria:
        parser.error("the baselines need at least one of --criteria or --global-criteria (or give --budget)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["combine"]:
        from _bench_report import combine

        return combine(argv[1:])
    if argv[:1] in (["budgets"], ["budgets-combine"]):  # the budget-targeted search, judged after recovery (#23)
        import _bench_budgets

        return _bench_budgets.run(argv[1:]) if argv[0] == "budgets" else _bench_budgets.combine(argv[1:])
    args = parse(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    args.out = args.out or Path("runs") / f"bench-{config.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    log: Log = lambda line: print(line, flush=True)  # noqa: E731
    started = time.perf_counter()
    runs: list[Run] = []
    base_metric = math.nan
    for seed in args.seeds:
        task, seed_runs = run_seed(config, args, seed, log)
        base_metric = task.base.metric if seed == args.seeds[0] else base_metric
        runs.extend(seed_runs)
    recipe = Recipe.of(task)
    meta = {"config": str(args.config), "name": config.name, "seeds": args.seeds, "base_metric": base_metric,
            "threads": args.threads, "recipe": dataclasses.asdict(recipe)}
    header = (f"{config.name}: seeds {args.seeds}, a candidate = {recipe.steps} steps + {recipe.forward_batches} "
              f"forward batches, uniform ratios {args.ratios}, global targets {args.global_targets}; total wall "
              f"{time.perf_counter() - started:.0f}s with {args.threads} torch thread(s)")
    write_summary(args.out, header, meta, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

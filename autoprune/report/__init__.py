"""The search, seen: report files (plots, CSVs, report.md), hypervolume, and optuna-dashboard on the study."""

from __future__ import annotations

from autoprune.report._collect import BUDGETS, ReportData, collect
from autoprune.report._dashboard import ConstraintsView, DashboardServer
from autoprune.report._hypervolume import hypervolume, hypervolume_history
from autoprune.report._open import open_existing_study
from autoprune.report._plots import plot_pareto
from autoprune.report._write import LATENCY_FILE, write_report

__all__ = [
    "BUDGETS",
    "LATENCY_FILE",
    "ConstraintsView",
    "DashboardServer",
    "ReportData",
    "collect",
    "hypervolume",
    "hypervolume_history",
    "open_existing_study",
    "plot_pareto",
    "write_report",
]

"""The search, seen: report files (plots, CSVs, report.md), hypervolume, and optuna-dashboard on the study."""

from __future__ import annotations

from autoprune.report._collect import BUDGETS, ReportData, collect
from autoprune.report._dashboard import ConstraintsView, DashboardServer, start_dashboard
from autoprune.report._hypervolume import REFERENCE_POINT, hypervolume, hypervolume_history
from autoprune.report._open import open_existing_study
from autoprune.report._plots import plot_hypervolume, plot_latency, plot_pareto, plot_ratios
from autoprune.report._write import LATENCY_FILE, REPORT_FILES, render_markdown, write_report

__all__ = [
    "BUDGETS",
    "LATENCY_FILE",
    "REFERENCE_POINT",
    "REPORT_FILES",
    "ConstraintsView",
    "DashboardServer",
    "ReportData",
    "collect",
    "hypervolume",
    "hypervolume_history",
    "open_existing_study",
    "plot_hypervolume",
    "plot_latency",
    "plot_pareto",
    "plot_ratios",
    "render_markdown",
    "start_dashboard",
    "write_report",
]

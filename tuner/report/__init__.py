"""A study as a page people look at: a HiPlot report, and a live dashboard of it.

`data` reads the study from the store, `references` finds the baselines' values among its
trials' metrics, `importance` ranks its parameters, `charts` draws the learning curves, `page`
assembles the standalone HTML page, `dashboard` serves it live.
"""
from tuner.report.charts import MISSING_COLOR, STATUS_COLORS
from tuner.report.dashboard import Dashboard, serve_dashboard
from tuner.report.importance import IMPORTANCE_METHOD, MIN_IMPORTANCE_TRIALS, Importance
from tuner.report.page import ReportResult, default_path, write_report

__all__ = ["Dashboard", "IMPORTANCE_METHOD", "Importance", "MIN_IMPORTANCE_TRIALS", "MISSING_COLOR", "ReportResult",
           "STATUS_COLORS", "default_path", "serve_dashboard", "write_report"]

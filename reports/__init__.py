"""MLflow runs -> tidy DataFrame -> statistics -> tables (CSV, Markdown, LaTeX), figures and a PDF.

Reads MLflow only (never ``bench``, ``methods`` or ``datasets``), so a report can be made anywhere.
"""

from reports.build import ReportSummary, analyse, build_report
from reports.offline import build_report_from_runs_csv
from reports.terminal import compare_text

__all__ = ["ReportSummary", "analyse", "build_report", "build_report_from_runs_csv", "compare_text"]

"""The report: the studies' sections drawn into one HTML page, from stored results only.

Public API::

    from widthlab.report import build_report      # the `widthlab report` command
    from widthlab.report.figures import save      # PNG + SVG, atomically
    from widthlab.report.html import Rendered, write_report
"""

from widthlab.report.builder import build_report

__all__ = ["build_report"]

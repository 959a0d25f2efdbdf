"""Figures, tables and the HTML report, built from stored results only.

Public API::

    from widthlab.report import build_report      # the `widthlab report` command
    from widthlab.report import figures           # one function per figure, plus save()
    from widthlab.report.html import Section, write_report
"""

from widthlab.report.builder import build_report

__all__ = ["build_report"]

"""Figures, tables and the HTML report, built from stored results only."""

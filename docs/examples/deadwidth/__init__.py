"""A complete minimal widthlab study (see docs/adding-a-study.md)."""

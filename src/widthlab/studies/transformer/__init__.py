"""The transformer study: FFN neurons and heads of a character-level GPT (issue 31)."""

from widthlab.studies.transformer.config import PROFILES, TransformerProfile
from widthlab.studies.transformer.study import STUDY, TransformerStudy

__all__ = ["PROFILES", "STUDY", "TransformerProfile", "TransformerStudy"]

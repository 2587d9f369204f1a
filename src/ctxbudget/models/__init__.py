"""Classifiers (DM-small/medium/large) and the budget generator g_θ."""
from .classifiers import MODELS, Normalize, dm_large, dm_medium, dm_small, get_model, register_model
from .generator import BudgetGenerator

__all__ = ["MODELS", "Normalize", "BudgetGenerator", "dm_small", "dm_medium", "dm_large", "get_model", "register_model"]

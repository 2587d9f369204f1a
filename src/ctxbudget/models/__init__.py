"""Classifiers (DM-small/medium/large, BatchNorm variants), their initialisation and the budget generator g_θ."""
from .classifiers import (
    INITS,
    MODELS,
    Normalize,
    dm_large,
    dm_medium,
    dm_medium_bn,
    dm_small,
    dm_small_bn,
    get_model,
    ibp_init_,
    initialize_,
    register_model,
)
from .generator import BudgetGenerator

__all__ = ["INITS", "MODELS", "Normalize", "BudgetGenerator", "dm_small", "dm_small_bn", "dm_medium", "dm_medium_bn",
           "dm_large", "get_model", "ibp_init_", "initialize_", "register_model"]

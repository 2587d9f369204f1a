"""The paper's experiments, one command each (``ctxbudget reproduce``).

``experiments`` holds the tables as data (rows, configs, the paper's numbers, schedules);
``runner`` trains / resumes / evaluates the rows and writes the side-by-side tables.
"""
from .experiments import EXPERIMENTS, SCHEDULES, Experiment, Row, get_experiment
from .runner import plan_experiment, run_experiment, write_tables

__all__ = ["EXPERIMENTS", "SCHEDULES", "Experiment", "Row", "get_experiment", "plan_experiment", "run_experiment",
           "write_tables"]

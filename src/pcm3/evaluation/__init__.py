"""Downstream evaluation: one module per task, each ``run(...) -> metrics dict``."""

"""Sweeps: the runs planned into groups that train as one stack (plan.py), groups claimed in a shared
store (leases.py), trained by an executor (executors.py: this process or worker processes; ray.py: a
Ray cluster), and written to the store (run.py)."""

"""Sweeps: the sweep top to bottom (driver.py), its runs grouped into stacks (grouping.py), groups
claimed in a shared store (leases.py), trained by an executor (executors.py: this process or worker
processes; ray.py: a Ray cluster), and written to the store by the driver."""

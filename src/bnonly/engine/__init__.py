"""Training: a group of runs trained as one stack of models (loop.py), the stacks (stack.py; the fused
chain in fused.py, any module through torch.func in functional.py), what trains (masks.py), the
device rules (device.py) and the data set resident on the device (resident.py)."""

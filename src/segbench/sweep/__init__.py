"""Ray Tune sweeps over training keys, and promoting the best configuration into training.

Importing this package is cheap (no Ray): :mod:`segbench.config` validates the ``sweep`` section
with :mod:`segbench.sweep.config` at load time. :func:`segbench.sweep.run.run_sweep` does the work.
"""

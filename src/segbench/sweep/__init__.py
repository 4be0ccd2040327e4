"""Ray Tune sweeps over training keys, and promoting the best configuration into training.

Importing this package is cheap (no Ray). :func:`segbench.sweep.plan.write_plan` records what a
sweep depends on (stage ``sweep_plan``), :func:`segbench.sweep.run.run_sweep` runs it, and
:func:`segbench.sweep.promote.promote` hands its best values to the entries that ask for them.
"""

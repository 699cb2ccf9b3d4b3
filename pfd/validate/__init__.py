"""Property validation of a force field: does it reproduce what the user trusts it for?

One module per property (``eos``, ``vacancy``, ``phonons``, ``diffusion``, ``stability``,
``parity``):
pure functions on ASE Atoms and calculators that return typed results. ``run``
compares the models of a finished run (teacher, student, the run's DFT labeller through
the label cache) and stores every result; ``report`` turns the results into PNGs,
markdown, self-contained HTML and ``validation.json``. No Prefect import here.
"""

"""What the chapter's exercises share: sweeps through the one driver, seeded settings and their comparisons,
interleaved timings, hardware probes, plans, and the report's assembly.

The questions themselves live in `experiments/exercises/`, one module each (q5's logic still here until it moves
onto the general search); `experiments/report.py` runs them and `report.py` renders REPORT.md and report.json.
"""

"""What the chapter's exercises share: sweeps through the one driver, seeded settings and their comparisons,
interleaved timings, hardware probes, plans, and the report's assembly.

The questions themselves live in `experiments/exercises/`, one module each (q5 on the general search of
`mlp_research.search`); `experiments/report.py` runs them and `report.py` renders REPORT.md and report.json.
"""

"""Where q5_joint_search still imports its seed statistics from; they live in `mlp_research.stats`.

Kept only until q5 moves onto the general search (its new home imports `mlp_research.stats` directly).
"""

from mlp_research.stats import Spread, pm, spread

__all__ = ["Spread", "pm", "spread"]

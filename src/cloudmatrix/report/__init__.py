"""Reports: figures and self-contained HTML pages written from results of the planner."""

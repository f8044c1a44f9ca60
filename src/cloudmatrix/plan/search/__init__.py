"""`cloudmatrix plan`: the SLO-aware deployment search (docs/plan.md).

request.py what is asked; space.py the layouts tried; curves.py the step model at anchor points;
screen.py the vectorised screen; confirm.py the simulator's verdict; frontier.py the Pareto front;
infeasible.py why nothing qualifies; planner.py the whole search."""

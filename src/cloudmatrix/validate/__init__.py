"""Validation against published results: the paper's figures reproduced by the cost model and the simulator."""

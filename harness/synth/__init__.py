"""Synthesis: the Optima reward, the tree search over dialogues, and the preference pairs it yields."""

"""The selectors DITS is compared with: Optima's full set, random selection, Q-value selection, and MAPPA-style
coach credit."""

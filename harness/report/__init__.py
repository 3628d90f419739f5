"""Reports from run records: comparison tables, cost ledgers, cost-per-gain, plots, leaderboards and
regression checks (`harness report`, `harness leaderboard`, `harness check`)."""

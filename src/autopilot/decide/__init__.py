"""Pure decisions over a ledger held in memory: sanity, trends, diagnosis, advisors, the guard, the
notes. Nothing in this package reads or writes files; `tests/test_boundaries.py` enforces that it
never imports `autopilot.workspace`, `autopilot.loop`, `autopilot.trainer` or `autopilot.atomic`."""

"""The autopilot loop: ledger, diagnosis, advisors, guard, notes, and the runner that ties them."""

"""The objective foundation backfill: trigger, fan-out controller, verification."""

DEFAULT_SOURCE = "manual.objective_backfill"

# Fan-out work yields to organic traffic: claims take higher priority first.
FANOUT_PRIORITY = -10

"""The objective foundation backfill: trigger, fan-out controller, verification."""

DEFAULT_SOURCE = "manual.objective_backfill"

# Backfill work yields to organic traffic (priority 0): claims take higher
# priority first. The controller's steps come before the fan-out jobs, so the
# snapshot is fanned out while the first chunks' jobs already run.
CONTROLLER_PRIORITY = -5
FANOUT_PRIORITY = -10

"""The objective foundation backfill: trigger, fan-out controller, verification."""

BACKFILL_JOB_TYPE = "inference.objective_backfill"
PROJECTION_UPDATE_JOB_TYPE = "projection.update"
DEFAULT_SOURCE = "manual.objective_backfill"

# Fan-out work yields to organic traffic: claims take higher priority first.
FANOUT_PRIORITY = -10

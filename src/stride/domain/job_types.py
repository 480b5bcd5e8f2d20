"""The names of the product's job types, shared by whoever enqueues and whoever runs them.

`stride.app` maps each of them to its handler; the SQL trigger of migration 0002
enqueues `projection.update` under the same literal name.
"""

from typing import Final

# Recompute the read models an event's type feeds, for the event's user.
PROJECTION_UPDATE_JOB_TYPE: Final = "projection.update"
# The objective foundation backfill's controller: fans projection.update out over a snapshot.
BACKFILL_JOB_TYPE: Final = "inference.objective_backfill"

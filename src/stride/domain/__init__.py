"""Pure domain code: event types and the projection folds. No I/O, no clock."""

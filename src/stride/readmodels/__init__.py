"""The projection I/O service: load users' events, run the read models' folds, write.

Pure folds live in stride.projections, SQL in stride.storage; this package joins
the two and is what the projection.update job handler (stride.app) and the
backfill's verification (stride.backfill.verify) call.
"""

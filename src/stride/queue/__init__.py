"""The PostgreSQL-native job queue on `background_jobs`: enqueue, claim, leases, the worker."""

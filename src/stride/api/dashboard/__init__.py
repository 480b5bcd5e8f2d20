"""The operator dashboard, served by `stride serve` at /admin (see routes.install)."""

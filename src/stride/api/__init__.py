"""`stride serve`: the HTTP API over the same functions the CLI calls."""

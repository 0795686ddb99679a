"""What the CLI shows: tables and live views, rendered from library results; no I/O of
their own beyond the console they are given."""

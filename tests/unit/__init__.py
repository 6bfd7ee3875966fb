"""Unit tests: operations fed canned responses, pure functions, the SQLite log; no sockets."""

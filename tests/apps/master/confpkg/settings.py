"""Config module loaded with -c python:confpkg.settings."""

workers = 3
max_requests = 77

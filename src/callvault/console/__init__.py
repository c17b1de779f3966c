"""The web console: server-rendered pages over the same services the /v2 API uses."""

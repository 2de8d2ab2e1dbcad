"""The keyed HTTP API for data buyers (roadcover serve): accounts, queries and the ASGI app."""

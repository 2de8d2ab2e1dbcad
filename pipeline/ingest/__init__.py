"""Ingest: raw dashcam traces -> clean, pseudonymous, trip-split points."""

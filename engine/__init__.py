"""cdlc-stream engine."""

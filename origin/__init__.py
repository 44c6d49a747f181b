"""cdlc-stream origin."""

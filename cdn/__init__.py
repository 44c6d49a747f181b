"""cdlc-stream cdn."""

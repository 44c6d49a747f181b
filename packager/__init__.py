"""cdlc-stream packager."""

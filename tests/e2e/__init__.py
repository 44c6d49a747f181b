"""End-to-end: real players in headless Chromium through the real edge and origin."""

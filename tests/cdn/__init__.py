"""Tests of cdn/: a real nginx edge."""

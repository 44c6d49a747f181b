"""Data model, metadata stores, caches and object stores. Imports nothing of ours."""

"""Diff-CXR core shared by every service: configuration, storage, tracking, manifest schema."""

__version__ = "0.1.0"

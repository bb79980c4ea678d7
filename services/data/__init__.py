"""Data stage: every supported dataset → one manifest (see ``diffcxr.manifest``)."""

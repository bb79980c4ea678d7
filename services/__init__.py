"""One package per pipeline stage; each is runnable alone and from ``orchestration``."""

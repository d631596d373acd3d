"""mtlrec: multi-task learning for recommendation."""
__version__ = "0.1.0"

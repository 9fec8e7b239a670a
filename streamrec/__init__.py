"""streamrec: streaming, real-time personalization (CLI and settings)."""
__version__ = "0.1.0"

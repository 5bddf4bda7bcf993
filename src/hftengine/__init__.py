"""HFT Data Engine: real-time options analytics."""

__version__ = "0.1.0"

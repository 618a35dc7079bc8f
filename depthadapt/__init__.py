"""depthadapt: adapt Depth Anything V2 depth models to new domains."""

__version__ = "0.1.0"

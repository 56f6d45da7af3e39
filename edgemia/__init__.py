"""edgemia: membership-inference audits of compressed edge models."""

__version__ = "0.1.0"

"""Compression stage: turn the float model into the variants that ship to devices."""

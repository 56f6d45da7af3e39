"""Devices: board profiles, the board probe and the SSH runner.

A device profile (devices/<name>.toml) describes one kind of board. `edgemia
device check` compares a board reached over SSH with its profile, and the
runner (edgemia.devices.runner) captures models on the board.
"""

"""What the station edge agent and the central collector both need.

Standards tables, the parameter registry, grading kernels, the wire format and configuration
types. Nothing here imports ``sanduan.edge``, ``sanduan.central`` or ``sanduan.hil``.
"""

"""What the station edge agent and the central collector both need.

Standards tables, the parameter registry, grading kernels, the wire format and configuration
types. Nothing here imports ``sanduan.edge``, ``sanduan.central`` or ``sanduan.hil``.
"""

from pathlib import Path

__version__ = "0.1.0"
"""sanduan's version (the package's too: pyproject.toml takes it from here). Read from here,
not with importlib.metadata, which would add about 2 MiB to the edge agent's memory."""

DATA = Path(__file__).parent / "data"
"""The tables shipped with sanduan (standards, parameters, device profiles). A plain path, not
importlib.resources, which would add its readers and zipfile to the edge agent's memory."""

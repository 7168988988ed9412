"""dagwire: learn what architecture a dataset asks for (Janik & Nowak 2022)."""

__version__ = "0.1.0"

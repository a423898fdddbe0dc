"""The package version, a leaf so that low layers (index metadata) can record it without importing the package root."""

__version__ = "0.1.0"

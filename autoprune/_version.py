"""The package version, in a module with no imports, so anything can read it cheaply."""

__version__ = "0.1.0"

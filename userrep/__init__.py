"""userrep core: settings, column names, data loaders, metadata DB and the CLI entry point."""

__version__ = "0.1.0"

"""MAIE: audio → raw transcript, clean transcript and a schema-valid structured summary."""

__version__ = "1.0.0"

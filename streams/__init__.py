"""leadflow's stream layer: the Faust app, settings, topic catalog, codecs and CLI."""

__version__ = "0.1.0"

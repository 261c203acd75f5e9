"""leadflow's own CLI subcommands, one module each (loaded lazily by streams.cli)."""

"""sitewatt simulators."""

"""sitewatt protocols."""

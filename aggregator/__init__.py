"""sitewatt aggregator."""

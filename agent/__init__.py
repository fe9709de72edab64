"""sitewatt agent."""

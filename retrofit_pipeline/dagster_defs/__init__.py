"""The Dagster layer: thin assets that call the domain modules and record metadata."""

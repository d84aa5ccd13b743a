"""model: recipes, the project config and the platform a run builds for. Imports the store only."""

"""The bottom layer: settings, the root error and the clock helpers. Imports nothing of ours."""

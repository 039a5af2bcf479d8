"""Training recipes for the dynamics model (CDM) and the world model (CWM)."""

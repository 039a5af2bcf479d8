"""Trajectory data: schema, loaders for real formats, negatives, the pre-tokenised cache (the procedural world is `worldboot.world`)."""

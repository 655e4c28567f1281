"""Crop, resample and normalise raw cases into the trainer's store, and undo it."""

"""Prediction: any-subset synthesis on raw cases, NIfTI out, explanations."""

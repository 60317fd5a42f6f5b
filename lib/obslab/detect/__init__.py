"""Detection: pure detectors over metric windows, incidents, evaluation."""

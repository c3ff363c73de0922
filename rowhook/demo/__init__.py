"""`rowhook demo`: the sample app and its driver (run.py) and the local webhook receiver (receiver.py)."""

"""Raw datasets, volume I/O, converters and the phantom generator."""

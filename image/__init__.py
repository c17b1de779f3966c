"""Building the container image offline (image/build.py, `make image`)."""

"""cnnctl: the landmark convolutional networks, on your own images, from one command line."""

__version__ = "0.1.0"

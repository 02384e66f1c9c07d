"""harness: does synthetic data from a GAN make a small-data image classifier better?"""
__version__ = "0.1.0"

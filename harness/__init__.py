"""harness: do synthetic images from a generator make a small-data image classifier better, and when?"""
__version__ = "0.2.0"
# Names renamed in 0.2 (config keys, CLI options) work, saying so, until this release removes them
# (docs/development.md: Deprecation).
REMOVED_IN = "0.3.0"

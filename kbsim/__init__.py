"""kbsim: the command line and experiment runner that sit on top of every stage."""

__version__ = "0.1.0"

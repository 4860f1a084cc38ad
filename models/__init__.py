"""models stage of kbsim (not yet implemented: see the issues)."""

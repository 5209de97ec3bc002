"""Run hashes of the sweep configs before the changes that must not move them (tiny: the sweep tests'
config; digits_reduced and paper: the shipped configs)."""
OLD_HASHES = {"tiny": "487d2a89e872e40f", "digits_reduced": "3dfb1c3ec5c5f0b3", "paper": "49689c1dc810930e"}

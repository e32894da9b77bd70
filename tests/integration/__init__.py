"""Whole-chain integration cases (tests/integration/cases/*.yaml), in the spirit of Gadgetron's
test/integration/cases/*.cfg: an input, a chain, a reference and a tolerance."""

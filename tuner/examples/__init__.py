"""Worked examples that ship with the package, so the built-in spaces that name them work from
an installed `tuner` (no checkout): `towers` holds the deep & cross towers of the `custom_towers` space."""

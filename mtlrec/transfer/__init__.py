"""Transfer from a source domain to a target domain (see :mod:`.init_from`)."""

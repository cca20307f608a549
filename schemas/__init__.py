"""Versioned Arrow schemas of every table daq-label writes, and a validator for them."""

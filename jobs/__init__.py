"""Entry points users run (``daq-label <command>``)."""

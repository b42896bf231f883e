"""The bottom layer: settings, typed configuration, program specs, encodings, addresses, the LM."""

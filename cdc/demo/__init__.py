"""Everything `cdc demo` runs on one machine: embedded servers and an application-like load."""

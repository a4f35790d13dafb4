"""The federation: clients (a Lightning module per site), how they are built, and the
engine that runs rounds over them in one process."""

"""Multi-machine federation on Flower: sites on their own machines, the server elsewhere."""

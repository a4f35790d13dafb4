"""FedBCS: frequency-domain style recalibration (FSR) in the encoder and context-aware
dual-level prototype alignment (CDPA); the strategy assembles the parts."""

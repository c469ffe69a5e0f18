"""The control plane: registry, versioned policy push (watch + ACK/NACK), mesh CA, API auth."""

"""Pure, shared parts used by agent and collector alike: no network, no disk."""

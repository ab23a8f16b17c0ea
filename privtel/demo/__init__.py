"""`privtel demo`: embedded broker, simulated devices, agent and collector in one process."""

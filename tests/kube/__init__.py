"""A Kubernetes API emulator for the tests: kmock plus what the real API server does (README, "Testing")."""

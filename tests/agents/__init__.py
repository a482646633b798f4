"""Agents built on the official MCP SDK clients, shared by the failover tests and benchmarks."""

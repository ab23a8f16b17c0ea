"""CLI collection over SSH: netmiko pollers driven by declarative command profiles."""

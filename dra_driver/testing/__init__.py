"""Test support shipped with the package: the fake kubelet and control-plane helpers."""

"""Plumbing between the kubelet and the core: gRPC servers, registration, generated stubs."""

"""dcu-dra: a Kubernetes Dynamic Resource Allocation driver for Hygon DCU accelerators."""

__version__ = "0.1.0"

#: The driver name published in ResourceSlices and used by DeviceClasses.
DRIVER_NAME = "dcu.hygon.com"

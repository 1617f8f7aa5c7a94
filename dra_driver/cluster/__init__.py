"""The cluster side of the daemon.

Our small REST client (``kube``), the ResourceSlice model (``slices``) and its publisher
(``publisher``), claim status (``claimstatus``) and orphan cleanup (``orphans``). May import
``dra_driver.prepare`` and below; never ``dra_driver.kubeletplugin`` or the daemon.
"""

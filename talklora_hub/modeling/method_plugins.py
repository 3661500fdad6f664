"""Adapter methods defined outside the bundle that a saved model uses.

The package's own copy imports none. save_pretrained replaces this file, in a folder it saves with a plugin
method, by one that imports the plugin's file (copied beside it): see methods.plugin_files.

Part of the bundle that travels inside every saved model.
"""

PLUGIN_FILES: list = []

"""Importing this module kills the importing process with exit status 1."""

import os

os._exit(1)

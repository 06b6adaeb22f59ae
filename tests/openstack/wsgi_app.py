"""WSGI entry point for the OpenStack API services of the novaha test stack.

gunicorn loads ``wsgi_app:application``; the real application module comes
from ``NOVAHA_WSGI_MODULE`` (e.g. ``keystone.wsgi.api``). The services'
start-up code parses ``sys.argv`` as their own command line, so gunicorn's
arguments are cleared before the import.
"""

import importlib
import os
import sys

sys.argv = sys.argv[:1]
application = importlib.import_module(os.environ["NOVAHA_WSGI_MODULE"]).application

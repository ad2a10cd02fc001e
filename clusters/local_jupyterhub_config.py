# The fixed JupyterHub config file of a local Hubfleet hub.  Everything hub-specific is in settings.json beside it,
# written by clusters/local.py: traitlets sections mapped to values, applied here as they are.
import json
import pathlib

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

for section, values in json.loads((pathlib.Path(__file__).parent / "settings.json").read_text()).items():
    for key, value in values.items():
        c[section][key] = value

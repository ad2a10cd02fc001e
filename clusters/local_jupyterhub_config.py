# The fixed JupyterHub config file of a local Hubfleet hub.  Everything hub-specific is in settings.json beside it,
# written by clusters/local.py: traitlets sections mapped to values, applied here as they are.
import json
import pathlib
import signal

# A console started in the background by a shell ignores SIGINT, and an ignored signal is inherited: JupyterHub would
# start its proxy and managed services (the idle culler) ignoring it, and on shutdown wait 10 s for each of those it
# stops with SIGINT.  JupyterHub installs its own handler once it runs; until then, Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

for section, values in json.loads((pathlib.Path(__file__).parent / "settings.json").read_text()).items():
    for key, value in values.items():
        c[section][key] = value
